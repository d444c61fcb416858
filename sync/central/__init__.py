"""The reference central backend: what gateways sync to, what staff and Open311 clients use.

    config.py    CentralConfig: everything it is handed, as plain data
    app.py       create_central_app(config): the sync API, the staff API, Open311
    store.py     CentralStore: submissions, claims of unique answers, status updates, gateways, nonces (SQLite,
                 or PostgreSQL at central.database_url)
    open311.py   the Open311 GeoReport v2 face
    service.py   Open311 service descriptions made from forms
    transfer.py  batch files at the centre: import a gateway's, export its answer

It shares `sync.protocol` with the gateway's sync client and never imports the client.
"""

from .app import create_central_app
from .config import CentralConfig, Notice
from .store import CentralStore, GatewayExists, PrefixTaken, RegistrationError
from .transfer import export_updates_file, import_batch_file

__all__ = ["CentralConfig", "CentralStore", "GatewayExists", "Notice", "PrefixTaken", "RegistrationError",
           "create_central_app", "export_updates_file", "import_batch_file"]
