"""The central backend as the `kentongan` config describes it: its `CentralConfig`, and its store for CLI verbs.

The central backend (sync/central/) reads no config and no menus; this is
where the shared config file and the menus become the plain data it takes,
and where the catalogs render the SMS a staff member's status change sends.
"""

from __future__ import annotations

from typing import Callable

from flows import Engine
from flows.typed import to_gsm7
from sync.central import CentralConfig, CentralStore, Notice

from .config import Config
from .errors import ConfigError
from .resources import load_engine
from .turn import notice_for

FORMS_LANGUAGE = "en"
"""Open311 clients and staff read the forms in English when the catalogs have it."""


def central_config(config: Config, engine: Engine) -> CentralConfig:
    """The central backend's settings from `config`, with the forms of `engine`'s menus.

    The gateway named in `config` is registered with its `sync.secret` and
    `gateway.ref_prefix` (when the secret is set and the gateway is not
    registered yet), so a demo gateway and its central backend sync out of
    the box. Raises `ConfigError` when `central.open311_services` names a
    flow that makes no submissions.
    """
    lang = FORMS_LANGUAGE if FORMS_LANGUAGE in engine.languages else engine.default_language
    forms = engine.forms(lang)
    for code in config["central.open311_services"]:
        if code not in forms:
            raise ConfigError(f"central.open311_services: {code!r} is not a flow that makes submissions "
                              f"(these do: {', '.join(forms)})")
    _check_routing(config, forms)
    own = {config["gateway.id"]: config["sync.secret"]} if config["sync.secret"] else {}
    return CentralConfig(
        data_dir=config.data_dir,
        database_url=config["central.database_url"],
        staff_token=config["central.staff_token"],
        forms=forms,
        open311_services=config["central.open311_services"],
        open311_api_key=config["central.open311_api_key"],
        ref_prefix=config["central.ref_prefix"],
        agency=config["central.agency"],
        gateways=own,
        prefixes={gateway_id: config["gateway.ref_prefix"] for gateway_id in own},
        notice=notice_renderer(engine),
        batch_size=config["sync.batch_size"],
        retention_days=config["central.retention_days"],
        open311_posts_per_minute=config["limits.open311_posts_per_minute"],
        sync_per_minute=config["limits.sync_per_minute"],
        routing=config["central.routing"],
        default_agency=config["central.default_agency"],
        targets=config["central.targets"],
        rating_days=config["central.rating_days"],
        escalate_seconds=config["central.escalate_minutes"] * 60.0,
    )


def _check_routing(config: Config, forms: dict[str, dict]) -> None:
    """`ConfigError` for a routing rule or target that names a service or category the menus do not have: it
    would never match, silently."""
    for key in ("central.routing", "central.targets"):
        for number, entry in enumerate(config[key], 1):
            if entry.service == "*":
                continue
            form = forms.get(entry.service)
            if form is None:
                raise ConfigError(f"{key}: entry {number}: {entry.service!r} is not a flow that makes submissions "
                                  f"(these do: {', '.join(forms)})")
            choices = next(([c["value"] for c in q["choices"]] for q in form["questions"] if q["kind"] == "choice"),
                           [])
            if entry.category != "*" and entry.category not in choices:
                raise ConfigError(f"{key}: entry {number}: {entry.category!r} is not a category of {entry.service} "
                                  f"(these are: {', '.join(choices) or 'none'})")


def notice_renderer(engine: Engine) -> Callable[[dict, str, str], Notice]:
    """What the central backend calls to show staff the SMS a status change sends: see `CentralConfig.notice`.

    The text is the one the gateway will queue, in the language the
    submission was made in (the gateway uses another only when the villager
    has since chosen one); the note is shortened when it is not in it whole.
    """

    def render(submission: dict, status: str, note: str) -> Notice:
        lang = submission["language"] if submission["language"] in engine.languages else engine.default_language
        asks = status == "resolved" and submission["service"] in engine.asks_fixed and submission.get("fixed") is None
        text = notice_for(engine, lang, submission["ref"], submission["service"], status, note, asks=asks)
        return Notice(text, shortened=bool(note.strip()) and to_gsm7(note).strip() not in text)

    return render


def open_central_store(config: Config, engine: Engine | None = None) -> CentralStore:
    """The central store in `gateway.data_dir`, for a CLI verb; the config's own gateway is registered.

    Loads the menus when no `engine` is given (raises `FlowError` when they are wrong).
    """
    return central_config(config, engine or load_engine(config)).open_store()
