"""Batch files at the centre: a gateway's submissions (and villagers' answers to "is it fixed?") in, its
acknowledgements and status updates out.

The same idempotent path as online sync: a file imported twice, or whose
submissions also arrived online, adds nothing twice. A file that must not be
used raises `BatchFileError` with one line saying why, before anything changes.
"""

from __future__ import annotations

from pathlib import Path

from .. import batchfile
from ..errors import BatchFileError
from ..protocol import FEEDBACK, FEEDBACK_ACKS
from .store import CentralStore, NoPrefix


def import_batch_file(store: CentralStore, path: str | Path) -> tuple[str, list[dict]]:
    """Ingest a gateway's submissions file; return the gateway's id and the answer per item.

    The file may be sealed with the gateway's current secret, or with its
    previous one during a rotation's grace period.
    """
    gateway_id = str(batchfile.peek(path).get("gateway"))
    secrets = store.secrets(gateway_id)
    if not secrets:
        raise BatchFileError(f"{path} comes from gateway {gateway_id!r}, which this central backend does not know")
    payload = _read(path, gateway_id, secrets)
    items, feedback = payload.get("items"), payload.get(FEEDBACK, [])
    if not isinstance(items, list) or not isinstance(feedback, list):
        raise BatchFileError(f"{path} has a malformed payload")
    try:
        with store.transaction():
            results = store.ingest(gateway_id, items)
            store.record_feedback(gateway_id, feedback)  # after the submissions they are about
        return gateway_id, results
    except NoPrefix as error:
        raise BatchFileError(str(error)) from None


def _read(path: str | Path, gateway_id: str, secrets: list[str]) -> dict:
    """The payload of a submissions file sealed with one of `secrets`; the last one's `BatchFileError` else."""
    for secret in secrets[:-1]:
        try:
            return batchfile.read(path, "submissions", gateway_id, secret)
        except BatchFileError:
            continue
    return batchfile.read(path, "submissions", gateway_id, secrets[-1])


def export_updates_file(store: CentralStore, gateway_id: str, path: str | Path) -> tuple[int, int, int]:
    """Write every acknowledgement and status update for `gateway_id` into a batch file (atomically).

    It is sealed with the gateway's current secret: after a rotation, carry the new secret with it.

    Returns (acknowledgements, status updates, file size in bytes).
    """
    secret = store.secret(gateway_id)
    if secret is None:
        raise BatchFileError(f"unknown gateway {gateway_id!r}")
    acks = store.acks(gateway_id)
    updates = store.updates(gateway_id, 0, limit=None)
    answered = store.feedback_acks(gateway_id)
    try:
        size = batchfile.write(path, "updates", gateway_id, secret,
                               {"acks": acks, "updates": updates, FEEDBACK_ACKS: answered})
    except OSError as error:
        raise BatchFileError(f"cannot write {path}: {error.strerror}") from None
    return len(acks), len(updates), size
