"""What the central backend is handed: `CentralConfig`, plain data, read nowhere else."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

from ..database import utc_now
from .store import CentralStore


@dataclass(frozen=True)
class CentralConfig:
    """Everything the central backend needs, as plain values.

    `forms` describes every flow that makes submissions, by service code, in
    one language (made by the gateway from its menus; see `service.py` for
    the shape). `open311_services` are the codes among them that Open311
    exposes. `gateways` (id -> sync secret) are registered at start-up.
    `clock` is what the store reads as now: tests hand in one they move.
    """

    data_dir: Path
    staff_token: str
    forms: Mapping[str, dict]
    open311_services: tuple[str, ...] = ("report",)
    open311_api_key: str = ""
    ref_prefix: str = "Z"
    agency: str = ""
    gateways: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    clock: Callable[[], dt.datetime] = utc_now

    def __post_init__(self) -> None:
        # Frozen all the way down: a caller's dicts cannot change the running backend.
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "forms", MappingProxyType(dict(self.forms)))
        object.__setattr__(self, "open311_services", tuple(self.open311_services))
        object.__setattr__(self, "gateways", MappingProxyType(dict(self.gateways)))

    @property
    def addresses(self) -> Mapping[str, str]:
        """Per service, the answer that holds the place (the form's `address` role)."""
        return MappingProxyType({code: form["address"] for code, form in self.forms.items() if form.get("address")})

    def open_store(self) -> CentralStore:
        """The central store in `data_dir`, knowing `gateways` (each registered again, so a new secret wins)."""
        store = CentralStore.open(self.data_dir, self.clock, self.addresses)
        try:
            for gateway_id, secret in self.gateways.items():
                store.register_gateway(gateway_id, secret)
        except BaseException:
            store.close()
            raise
        return store
