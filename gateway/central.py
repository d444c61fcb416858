"""The central backend as the `kentongan` config describes it: its `CentralConfig`, and its store for CLI verbs.

The central backend (sync/central/) reads no config and no menus; this is
where the shared config file and the menus become the plain data it takes.
"""

from __future__ import annotations

from flows import Engine
from sync.central import CentralConfig, CentralStore

from .config import Config
from .errors import ConfigError
from .resources import load_engine

FORMS_LANGUAGE = "en"
"""Open311 clients and staff read the forms in English when the catalogs have it."""


def central_config(config: Config, engine: Engine) -> CentralConfig:
    """The central backend's settings from `config`, with the forms of `engine`'s menus.

    The gateway named in `config` is registered with its `sync.secret`
    (when set), so a demo gateway and its central backend sync out of the box.
    Raises `ConfigError` when `central.open311_services` names a flow that
    makes no submissions.
    """
    lang = FORMS_LANGUAGE if FORMS_LANGUAGE in engine.languages else engine.default_language
    forms = engine.forms(lang)
    for code in config["central.open311_services"]:
        if code not in forms:
            raise ConfigError(f"central.open311_services: {code!r} is not a flow that makes submissions "
                              f"(these do: {', '.join(forms)})")
    return CentralConfig(
        data_dir=config.data_dir,
        staff_token=config["central.staff_token"],
        forms=forms,
        open311_services=config["central.open311_services"],
        open311_api_key=config["central.open311_api_key"],
        ref_prefix=config["central.ref_prefix"],
        agency=config["central.agency"],
        gateways={config["gateway.id"]: config["sync.secret"]} if config["sync.secret"] else {},
    )


def open_central_store(config: Config, engine: Engine | None = None) -> CentralStore:
    """The central store in `gateway.data_dir`, for a CLI verb; the config's own gateway is registered.

    Loads the menus when no `engine` is given (raises `FlowError` when they are wrong).
    """
    return central_config(config, engine or load_engine(config)).open_store()
