"""What the central backend is handed: `CentralConfig`, plain data, read nowhere else."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, NamedTuple

from ..database import utc_now
from .routing import DEFAULT_AGENCY, Routing, Rule, Target
from .store import RATING_DAYS, CentralStore

log = logging.getLogger(__name__)


class Notice(NamedTuple):
    """The SMS a status change will send, and whether the staff note in it is shortened to fit."""

    text: str
    shortened: bool


NoticeRenderer = Callable[[dict, str, str], Notice]
"""(submission, status, note) -> the `Notice` its phone will get, in the submission's language."""


@dataclass(frozen=True)
class CentralConfig:
    """Everything the central backend needs, as plain values.

    `forms` describes every flow that makes submissions, by service code, in
    one language (made by the gateway from its menus; see `service.py` for
    the shape). `open311_services` are the codes among them that Open311
    exposes. `gateways` (id -> sync secret) are registered at start-up when
    unknown, with their reference prefix from `prefixes` (id -> prefix; the
    first free one when absent). `clock` is what the store reads as now:
    tests hand in one they move. `notice`, when given, renders the SMS a
    status change sends (the backend knows no catalogs), so that staff are
    told what their note becomes. `batch_size` is the most items a gateway
    sends in one batch (`sync.batch_size`): it sets how much of a sync
    request the backend reads at all. `retention_days` is how long a
    submission whose status is final stays whole once unchanged (see
    `CentralStore.purge_personal`); 0 keeps everything forever.
    `open311_posts_per_minute` and `sync_per_minute` limit those requests per
    source address (`limits.py`); 0, the default here, turns a limit off.
    `routing` (rules, first match wins) and `default_agency` decide each new
    request's agency (`agency`, the one Open311 named for every request
    before routing, is the default agency when that is not given), `targets` its deadline (see `routing.py`);
    `rating_days` is how long after a resolution a villager's answer to "is
    it fixed?" counts. `escalate_seconds` is how often the backend escalates
    requests that became overdue. `database_url` (`central.database_url`), when
    set, is the PostgreSQL database the store lives in instead of a SQLite
    file in `data_dir` (which still holds the key file).
    """

    data_dir: Path
    staff_token: str
    forms: Mapping[str, dict]
    open311_services: tuple[str, ...] = ("report",)
    open311_api_key: str = ""
    ref_prefix: str = "Z"
    agency: str = ""
    gateways: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    prefixes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    clock: Callable[[], dt.datetime] = utc_now
    notice: NoticeRenderer | None = None
    batch_size: int = 100
    open311_posts_per_minute: int = 0
    sync_per_minute: int = 0
    retention_days: int = 365
    routing: tuple[Rule, ...] = ()
    default_agency: str = DEFAULT_AGENCY
    targets: tuple[Target, ...] = ()
    rating_days: int = RATING_DAYS
    escalate_seconds: float = 300.0
    database_url: str = ""

    def __post_init__(self) -> None:
        # Frozen all the way down: a caller's dicts cannot change the running backend.
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "open311_services", tuple(self.open311_services))
        # A form says whether Open311 publishes it: only then are its place and description not personal.
        object.__setattr__(self, "forms", MappingProxyType({
            code: {**form, "published": code in self.open311_services} for code, form in self.forms.items()}))
        object.__setattr__(self, "gateways", MappingProxyType(dict(self.gateways)))
        object.__setattr__(self, "prefixes", MappingProxyType(dict(self.prefixes)))
        if self.agency and self.default_agency == DEFAULT_AGENCY:  # `agency`: what Open311 named before routing
            object.__setattr__(self, "default_agency", self.agency)
        object.__setattr__(self, "routing", tuple(Rule(*rule) for rule in self.routing))
        object.__setattr__(self, "targets", tuple(Target(*target) for target in self.targets))

    @property
    def addresses(self) -> Mapping[str, str]:
        """Per service, the answer that holds the place (the form's `address` role)."""
        return MappingProxyType({code: form["address"] for code, form in self.forms.items() if form.get("address")})

    @property
    def uniques(self) -> Mapping[str, tuple[str, ...]]:
        """Per service, the answers one submission may hold (a voter's NIK)."""
        return MappingProxyType({code: tuple(form["unique"]) for code, form in self.forms.items()
                                 if form.get("unique")})

    @property
    def categories(self) -> Mapping[str, str]:
        """Per service, the answer that is its category: the form's first question answered from a list."""
        return MappingProxyType({code: choice[0] for code, form in self.forms.items()
                                 if (choice := [q["answer"] for q in form["questions"] if q["kind"] == "choice"])})

    @property
    def retention(self) -> dt.timedelta | None:
        """How long a final submission stays whole once unchanged; None when kept forever."""
        return dt.timedelta(days=self.retention_days) if self.retention_days else None

    def open_store(self) -> CentralStore:
        """The central store in `data_dir` (or at `database_url`), knowing `gateways`.

        A gateway already registered keeps its secret and prefix: a config
        never overwrites them (`kentongan central gateway add --rotate` issues
        a new secret). When the configured ones differ, a WARNING says so.
        Raises `PrefixTaken` when a new gateway's prefix is the centre's own
        or another gateway's.
        """
        store = CentralStore.open(self.data_dir, self.clock, self.addresses, self.uniques, self.ref_prefix,
                                  routing=Routing(self.routing, self.default_agency, self.targets),
                                  categories=self.categories, rating_days=self.rating_days, notice=self.notice,
                                  database_url=self.database_url)
        try:
            for gateway_id, secret in self.gateways.items():
                self._register(store, gateway_id, secret, self.prefixes.get(gateway_id))
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def _register(store: CentralStore, gateway_id: str, secret: str, prefix: str | None) -> None:
        known = store.gateway(gateway_id)
        if known is None:
            store.add_gateway(gateway_id, secret, prefix)
            return
        if not known["prefix"]:
            known["prefix"] = store.give_prefix(gateway_id, prefix)
        if secret != store.secret(gateway_id):
            log.warning("gateway %s: the configured sync secret is not the one registered at the central backend; "
                        "the registered one stays (`kentongan central gateway add %s --rotate` issues a new one)",
                        gateway_id, gateway_id)
        if prefix and prefix != known["prefix"]:
            log.warning("gateway %s: the configured reference prefix %s is not the registered %s; the registered "
                        "one stays, and references with another prefix are refused", gateway_id, prefix,
                        known["prefix"])
