"""Configuration, read and checked in one place.

Settings are declared once in `SETTINGS` as (name, default, parser, help).
A value comes from, in rising order: the default, `config.yaml`, and the
environment variable `KENTONGAN_<SECTION>_<KEY>` (`KENTONGAN_GATEWAY_PORT`);
a list in a variable is comma-separated (`KENTONGAN_LANGUAGE_AVAILABLE=id,en`).
An unknown key, an unknown `KENTONGAN_*` variable (other than the few in
`NON_SETTING_VARIABLES`) or a bad value raises `ConfigError` with one line
naming it; the CLI prints that line and stops.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import yaml

from sync.central import routing
from sync.reference import check_prefix

from .errors import ConfigError

DEFAULT_CONFIG = Path("config.yaml")
ENV_PREFIX = "KENTONGAN_"

# `KENTONGAN_*` variables that are not settings: load_config lets them through,
# the test suite and CI read them. Each is documented in the README.
NON_SETTING_VARIABLES: Mapping[str, str] = MappingProxyType({
    "KENTONGAN_REQUIRE_SERVICES": "Tests that need PostgreSQL or Redis fail instead of skipping (CI sets it).",
    "KENTONGAN_REQUIRE_BROWSER": "Browser tests fail instead of skipping when Chromium is absent.",
    "KENTONGAN_REGEN_TRANSCRIPTS": "With 1, the USSD tests rewrite the golden transcripts in tests/transcripts/.",
    "KENTONGAN_FUZZ": "With long, the hostile-input property tests send 10,000 requests per server instead of 2,000.",
})


def _string(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError("expected a string")
    return str(value)


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number from {low} to {high}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= number <= high or (isinstance(value, float) and value != number):
            raise ValueError(f"expected a whole number from {low} to {high}")
        return number

    return parse


def _names(example: str, empty_ok: bool = False) -> Callable[[Any], tuple[str, ...]]:
    def parse(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or not (value or empty_ok) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"expected a list of names, like {example}")
        return tuple(value)

    return parse


def _prefix(value: Any) -> str:
    return check_prefix(_string(value))


def _seconds(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected seconds from {low} to {high}") from None
        if isinstance(value, bool) or not low <= number <= high:
            raise ValueError(f"expected seconds from {low} to {high}")
        return number

    return parse


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError("expected true or false")


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _listed(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A list setting of mappings checked by `parse`; from an environment variable, written as YAML
    (`KENTONGAN_CENTRAL_TARGETS='[{service: report, hours: 72}]'`)."""
    def parsed(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else []
            except yaml.YAMLError:
                raise ValueError("expected a YAML list of mappings") from None
        return parse([] if value is None else value)

    return parsed


def _url(value: Any) -> str:
    text = _string(value).strip()
    if not text:
        return ""
    parsed = urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def _dsn(*schemes: str) -> Callable[[Any], str]:
    """A database or cache address (`postgresql://host/db`, `redis://host:6379/0`), or empty for none."""
    def parse(value: Any) -> str:
        text = _string(value).strip()
        if not text:
            return ""
        if urlsplit(text).scheme not in schemes:
            raise ValueError(f"expected a {' or '.join(s + '://' for s in schemes)} address")
        return text

    return parse


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace(".", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting("gateway.host", "127.0.0.1", _string, "Address the gateway listens on."),
    Setting("gateway.port", 8080, _integer(1, 65535), "Port the gateway listens on."),
    Setting("gateway.data_dir", "./var", _string,
            "Folder for the store (gateway.db) and the key that seals personal data (gateway.key)."),
    Setting("gateway.database_url", "", _dsn("postgresql", "postgres"),
            "Where the gateway's store lives: empty for the embedded SQLite file in gateway.data_dir, or a "
            "PostgreSQL address (postgresql://user@host/db), which several workers and machines can share. "
            "The key that seals personal data stays in gateway.data_dir.", secret=True),
    Setting("sessions.backend", "store", _one_of("store", "redis"),
            "Where USSD sessions live: store (the gateway's store) or redis (sessions.redis_url; they "
            "expire on their own after ussd.keep_sessions_hours)."),
    Setting("sessions.redis_url", "redis://127.0.0.1:6379/0", _dsn("redis", "rediss", "unix"),
            "The Redis server of USSD sessions when sessions.backend is redis.", secret=True),
    Setting("sessions.redis_prefix", "kentongan:", _string,
            "Start of every Redis key of this gateway's sessions; gateways sharing one Redis need one each."),
    Setting("gateway.id", "demo", _string,
            "This gateway's id at the central backend; it signs every sync request with sync.secret."),
    Setting("gateway.ref_prefix", "K", _prefix,
            "This gateway's reference prefix, 1-3 of 23456789ABCDEFGHJKMNPQRSTUVWXYZ; "
            "unique per gateway, so references never collide."),
    Setting("gateway.callback_secret", "", _string,
            "When set, every callback URL must carry ?key=<this secret>; otherwise 403.", secret=True),
    Setting("limits.wrong_keys_per_minute", 10, _integer(0, 100_000),
            "Callbacks with a missing or wrong ?key= taken per source address per minute; past that the "
            "address gets 429 without its key being compared, so the secret cannot be guessed. 0: no limit."),
    Setting("server.idle_seconds", 15.0, _seconds(0.05, 3600),
            "Every server (gateway, central backend) closes a connection that has not sent a complete "
            "request head for this long: idle keep-alive connections and slow (slowloris) headers alike."),
    Setting("server.read_seconds", 10.0, _seconds(0.05, 600),
            "How long the body of a USSD or SMS callback may take to arrive; a slower one gets 408."),
    Setting("server.max_connections", 256, _integer(1, 100_000),
            "Open connections each server takes; more are answered 503 and closed. Lowered at start to "
            "half the open-file limit shared by the servers, so a flood never runs the process out of files."),
    Setting("web.secure_cookies", False, _boolean,
            "Sign-in cookies carry Secure even when a request came over plain http: set it behind a reverse "
            "proxy that terminates TLS (over https they carry it anyway)."),
    Setting("web.login_per_minute", 10, _integer(0, 10_000),
            "Sign-in attempts per source address per minute on /kiosk and /office; more get 429. 0 turns the "
            "limit off (the lock-out per name stays)."),
    Setting("simulator.enabled", False, _boolean,
            "Serve the web phone at /simulator: a keypad that dials this gateway's USSD callback and shows "
            "the SMS of the number typed, to anyone who can reach the gateway. For demo and training "
            "gateways only; off, /simulator is a 404."),
    Setting("ussd.resume_minutes", 5, _integer(0, 24 * 60),
            "A caller whose session dropped and who dials again within this many minutes "
            "is offered to continue; 0 turns the offer off."),
    Setting("ussd.keep_sessions_hours", 24, _integer(1, 24 * 365),
            "USSD sessions untouched for this long are deleted."),
    Setting("ussd.menus_dir", "", _string, "Folder of menu files; empty for the menus shipped with Kentongan."),
    Setting("language.default", "id", _string, "Language of callers who never chose one."),
    Setting("language.available", ("id", "en", "sw"), _names("[id, en, sw]"),
            "Languages callers can choose, in menu order; each needs a catalog in locale/."),
    Setting("language.locale_dir", "", _string, "Folder of catalogs; empty for the catalogs shipped with Kentongan."),
    Setting("sms.provider", "console", _one_of("console", "africastalking"),
            "Where outgoing SMS go: console (printed and kept, no account needed) or africastalking."),
    Setting("sms.africastalking.username", "sandbox", _string, "Africa's Talking username."),
    Setting("sms.africastalking.api_key", "", _string, "Africa's Talking API key.", secret=True),
    Setting("sms.africastalking.sender_id", "", _string, "Sender id or short code; empty for the account default."),
    Setting("sms.africastalking.keyword", "", _string,
            "Premium keyword of replies to premium (on-demand) SMS, those that came with a linkId; they go "
            "back from the short code they came to. Empty sends none."),
    Setting("sms.africastalking.api_url", "", _url,
            "Base URL the SDK sends to; empty for Africa's Talking's own (tests point it at a stand-in)."),
    Setting("sms.timeout_seconds", 9.05, _seconds(0.1, 60),
            "How long one send may wait for Africa's Talking before it counts as failed and is retried."),
    Setting("sms.ttl_hours", 24, _integer(1, 24 * 14),
            "An SMS not sent within this many hours is expired, not sent: a stale answer helps nobody."),
    Setting("sms.max_attempts", 8, _integer(1, 100), "Attempts before an SMS is given up (dead)."),
    Setting("sms.retry_seconds", 30.0, _seconds(0.01, 3600),
            "First retry delay; it doubles per attempt (with jitter), up to an hour."),
    Setting("sms.auto_replies_per_hour", 5, _integer(1, 1000),
            "Answers to HELP and to text the gateway does not understand, per number per hour; more are "
            "suppressed, so two machines answering each other cannot loop. Confirmations, acknowledgements "
            "and status answers are never held back."),
    Setting("sms.keep_days", 30, _integer(1, 3650),
            "SMS in a final state (delivered, failed, dead, expired, suppressed) are deleted after this many "
            "days; queued and sent ones are kept whatever their age."),
    Setting("privacy.retention_days", 90, _integer(1, 36500),
            "Days after which a submission the central backend has acknowledged keeps only its reference, "
            "service, status, note and dates: answers and phone number are erased (kentongan purge, and "
            "hourly in serve). Not yet acknowledged: kept whole."),
    Setting("sms.pending_minutes", 60, _integer(1, 24 * 60),
            "How long an SMS report without a place waits for the SMS that gives it; a place sent later "
            "is told the report expired."),
    Setting("sync.secret", "", _string,
            "The secret this gateway and the central backend share; empty turns sync off.", secret=True),
    Setting("sync.interval_seconds", 60.0, _seconds(0.05, 86400),
            "Seconds between sync rounds while the link is up; while it is down, rounds back off "
            "exponentially (with jitter) up to an hour."),
    Setting("sync.batch_size", 100, _integer(1, 5000), "Submissions per batch pushed to the central backend."),
    Setting("sync.timeout_seconds", 20.0, _seconds(0.05, 600),
            "How long one sync request may take before the round counts as failed."),
    Setting("central.embedded", False, _boolean, "Whether serve also runs the central backend."),
    Setting("central.host", "127.0.0.1", _string, "Address the central backend listens on."),
    Setting("central.port", 8081, _integer(1, 65535), "Port the central backend listens on."),
    Setting("central.url", "http://127.0.0.1:8081", _url, "Where the gateway finds the central backend."),
    Setting("central.database_url", "", _dsn("postgresql", "postgres"),
            "Where the central backend's store lives: empty for the SQLite file central.db in "
            "gateway.data_dir, or a PostgreSQL address (postgresql://user@host/db).", secret=True),
    Setting("central.staff_token", "", _string, "Bearer token of the staff API.", secret=True),
    Setting("central.ref_prefix", "Z", _prefix,
            "Reference prefix of requests made at the centre (Open311); no gateway may use it."),
    Setting("central.open311_api_key", "", _string,
            "The api_key Open311 clients send to create requests; empty refuses every POST.", secret=True),
    Setting("central.open311_services", ("report",), _names("[report]", empty_ok=True),
            "Flows exposed as Open311 services; only ones without personal data (not voter, permit)."),
    Setting("central.agency", "", _string,
            "Older name of central.default_agency, from when it was Open311's agency_responsible of every request: "
            "when set and central.default_agency is not, it is the default agency."),
    Setting("central.routing", (), _listed(routing.rules),
            "Rules that give each new request its agency, first match wins: a list of {service, category, "
            "village, agency}; service, category and village ('*' by default) are a service code, a category "
            "value and a village pattern (shell-style, any case)."),
    Setting("central.default_agency", routing.DEFAULT_AGENCY, _string,
            "The agency of a request that no routing rule matches."),
    Setting("central.targets", (), _listed(routing.targets),
            "Deadlines: a list of {service, category, hours}, first match wins; category '*' by default. A request "
            "is overdue `hours` after it reached the central backend while not resolved or rejected, and is then "
            "escalated to its agency's supervisors. No match: no deadline."),
    Setting("central.rating_days", 14, _integer(1, 365),
            "Days after a resolution during which a villager's answer to \"is it fixed?\" counts; later ones are "
            "thanked and kept, not counted."),
    Setting("central.escalate_minutes", 5, _integer(1, 24 * 60),
            "How often the central backend escalates the requests that became overdue."),
    Setting("central.retention_days", 365, _integer(0, 36500),
            "Days after which a submission whose status is final (resolved, rejected) and unchanged keeps only "
            "its reference, service, status, note, dates, gateway and place digest at the central backend: "
            "answers and phone number are erased (kentongan central purge, and daily in the central backend). "
            "0 keeps everything."),
    Setting("limits.ussd_sessions_per_hour", 20, _integer(0, 100_000),
            "New USSD sessions one phone may start per hour; more are answered END with a polite text "
            "and nothing is stored. A session under way is never cut off. 0 turns the limit off."),
    Setting("limits.sms_per_hour", 30, _integer(0, 100_000),
            "Incoming SMS one phone may send per hour; the first one over gets one polite SMS, the rest "
            "nothing. 0 turns the limit off."),
    Setting("limits.submissions_per_day", 5, _integer(0, 100_000),
            "Submissions of one service one phone may make in 24 hours with a confirmation SMS; more are "
            "stored and shown with their reference, but held for staff review (status review) and get no "
            "confirmation SMS. 0 turns the limit off."),
    Setting("limits.open311_posts_per_minute", 20, _integer(0, 100_000),
            "Open311 POSTs the central backend takes per source address per minute; more get 429 with "
            "Retry-After. 0 turns the limit off."),
    Setting("limits.sync_per_minute", 600, _integer(0, 100_000),
            "Sync requests the central backend takes per source address per minute; more get 429 with "
            "Retry-After. 0 turns the limit off."),
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}
_KNOWN_VARIABLES = frozenset(setting.env for setting in SETTINGS) | frozenset(NON_SETTING_VARIABLES)


@dataclass(frozen=True)
class Config:
    """Checked settings, read with `config["gateway.port"]`.

    `source` is the absolute path of the config file the settings were read
    from, or None when no file was read: then every value is its default
    unless the environment set it (`serve` says "serving on defaults").
    """

    values: Mapping[str, Any]
    source: Path | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def menus_dir(self) -> Path:
        return Path(self["ussd.menus_dir"]) if self["ussd.menus_dir"] else data_root() / "menus"

    @property
    def locale_dir(self) -> Path:
        return Path(self["language.locale_dir"]) if self["language.locale_dir"] else data_root() / "locale"

    @property
    def data_dir(self) -> Path:
        return Path(self["gateway.data_dir"])


def data_root() -> Path:
    """Where the shipped menus/ and locale/ are: beside the code in a checkout, else <prefix>/share."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "menus").is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "kentongan"


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None, *,
                require_file: bool = False, **overrides: Any) -> Config:
    """Read `path` (default `./config.yaml`), apply the environment, check everything.

    A named `path` must exist. Without one, `./config.yaml` is read when it is
    there; when it is not, the defaults are used (`Config.source` is None),
    unless `require_file` is true: then `ConfigError` says where it looked.
    `environ` (default `os.environ`) must hold no unknown `KENTONGAN_*`
    variable. `overrides` (`gateway__port=0`) win over everything; tests use them.
    """
    environ = os.environ if environ is None else environ
    _check_variables(environ)
    explicit = path is not None
    path = Path(path) if explicit else DEFAULT_CONFIG
    raw: dict[str, Any] = {}
    source = None
    if path.exists():
        source = path.absolute()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
            raise ConfigError(f"{path}: cannot read: {reason}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected sections like 'gateway:' at the top level")
        raw.update(_flatten(data, path))
    elif explicit:
        raise ConfigError(f"{path}: no such config file")
    elif require_file:
        raise ConfigError(f"no config file: looked for {path.absolute()}; "
                          f"pass --config PATH or run from the folder that has {path}")
    for setting in SETTINGS:
        if setting.env in environ:
            raw[setting.name] = environ[setting.env]
    for key, value in overrides.items():
        raw[key.replace("__", ".")] = value
    values = {}
    for setting in SETTINGS:
        value = raw.get(setting.name, setting.default)
        try:
            values[setting.name] = setting.parse(value)
        except ValueError as error:
            origin = setting.env if setting.env in environ else setting.name
            shown = "" if setting.secret else f" (got {value!r})"
            raise ConfigError(f"{origin}: {error}{shown}") from None
    if values["language.default"] not in values["language.available"]:
        raise ConfigError(f"language.default: {values['language.default']!r} is not in language.available "
                          f"{list(values['language.available'])}")
    return Config(MappingProxyType(values), source)


def _check_variables(environ: Mapping[str, str]) -> None:
    """A misspelt `KENTONGAN_*` variable stops start-up instead of being ignored."""
    unknown = sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in _KNOWN_VARIABLES)
    if not unknown:
        return
    name = unknown[0]
    # Compare what follows the prefix, which every candidate shares.
    tails = {known[len(ENV_PREFIX):]: known for known in _KNOWN_VARIABLES}
    close = difflib.get_close_matches(name[len(ENV_PREFIX):], tails, n=1)
    hint = f" (did you mean {tails[close[0]]}?)" if close else ""
    raise ConfigError(f"{name}: unknown setting{hint}")


def _flatten(data: dict, path: Path, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, path, name + "."))
            continue
        if name not in _BY_NAME:
            close = difflib.get_close_matches(name, _BY_NAME, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {name!r}{hint}")
        flat[name] = value
    return flat
