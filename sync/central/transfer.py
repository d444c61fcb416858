"""Batch files at the centre: a gateway's submissions in, its acknowledgements and status updates out.

The same idempotent path as online sync: a file imported twice, or whose
submissions also arrived online, adds nothing twice. A file that must not be
used raises `BatchFileError` with one line saying why, before anything changes.
"""

from __future__ import annotations

from pathlib import Path

from .. import batchfile
from ..errors import BatchFileError
from .store import CentralStore


def import_batch_file(store: CentralStore, path: str | Path) -> tuple[str, list[dict]]:
    """Ingest a gateway's submissions file; return the gateway's id and the answer per item."""
    gateway_id = str(batchfile.peek(path).get("gateway"))
    secret = store.secret(gateway_id)
    if secret is None:
        raise BatchFileError(f"{path} comes from gateway {gateway_id!r}, which this central backend does not know")
    items = batchfile.read(path, "submissions", gateway_id, secret).get("items")
    if not isinstance(items, list):
        raise BatchFileError(f"{path} has a malformed payload")
    return gateway_id, store.ingest(gateway_id, items)


def export_updates_file(store: CentralStore, gateway_id: str, path: str | Path) -> tuple[int, int, int]:
    """Write every acknowledgement and status update for `gateway_id` into a batch file (atomically).

    Returns (acknowledgements, status updates, file size in bytes).
    """
    secret = store.secret(gateway_id)
    if secret is None:
        raise BatchFileError(f"unknown gateway {gateway_id!r}")
    acks = store.acks(gateway_id)
    updates = store.updates(gateway_id, 0, limit=None)
    try:
        size = batchfile.write(path, "updates", gateway_id, secret, {"acks": acks, "updates": updates})
    except OSError as error:
        raise BatchFileError(f"cannot write {path}: {error.strerror}") from None
    return len(acks), len(updates), size
