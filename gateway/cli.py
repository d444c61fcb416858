"""The `kentongan` command (also `python -m gateway`): verbs on the library, nothing more.

Each command opens what it needs through `_opened`, calls one library
function, and prints. A failure the operator can act on is one line on
standard error and exit code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import socket
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NoReturn
from urllib.parse import urlsplit

import aiohttp
import click
from ulid import ULID

from flows import Engine, FlowError
from sync.accounts import PASSWORD_MIN, ROLES, AccountError, check_password, hash_password
from sync.central import (CentralConfig, CentralStore, GatewayExists, PrefixTaken, RegistrationError,
                          create_central_app, export_updates_file, import_batch_file)
from sync.errors import BatchFileError, KeyFileError, StoreError, SyncError
from sync.errors import SessionsUnavailable
from sync.outbox import STATES as OUTBOX_STATES
from sync.rotate import BATCH_SIZE, rotate_key
from sync.store import DATABASE_NAME, KEY_FILE_NAME, Store

from .app import Served, ServerLimits, create_apps, gateway_served, run_apps
from .central import central_config
from .config import Config, load_config
from .errors import ConfigError
from .log import mask_phone, setup_logging
from .pages import page_settings
from .resources import Rules, housekeep, load_engine, stored_counts
from .safety import exposure_problem
from .syncer import export_file, import_file, sync_once
from .workers import Supervisor, tag_worker, worker_command

log = logging.getLogger("kentongan")

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="Config file (default ./config.yaml). Any key can be overridden by KENTONGAN_<SECTION>_<KEY>.",
)


def _fail(message: str) -> NoReturn:
    click.echo(f"kentongan: {message}", err=True)
    sys.exit(2)


@dataclass
class _Opened:
    config: Config
    engine: Engine | None = None
    central_config: CentralConfig | None = None
    store: Store | None = None
    central: CentralStore | None = None


@contextlib.contextmanager
def _opened(config_path: str | None, *, engine: bool = False, store: bool = False, central: bool = False,
            require_file: bool = True) -> Iterator[_Opened]:
    """The config and what a command needs of it (menus, the gateway's store, the central store), closed after.

    A command that reads a store refuses to run without a config file, and
    the gateway's store must already exist: a typo in a path never makes an
    empty store and a new key.
    """
    stack = contextlib.ExitStack()
    try:
        opened = _Opened(load_config(config_path, require_file=require_file))
        if engine or central:
            opened.engine = load_engine(opened.config)
            # Made whenever the menus are loaded: every setting is checked before anything runs.
            opened.central_config = central_config(opened.config, opened.engine)
        if store:
            database_url = opened.config["gateway.database_url"]
            if database_url and not (opened.config.data_dir / KEY_FILE_NAME).exists():
                _fail(f"no gateway key in {opened.config.data_dir.resolve()} ({KEY_FILE_NAME}) for the store in "
                      f"gateway.database_url; copy it from a machine that serves that store")
            if not database_url and not (opened.config.data_dir / DATABASE_NAME).exists():
                _fail(f"no gateway store in {opened.config.data_dir.resolve()} ({DATABASE_NAME}); "
                      f"check gateway.data_dir, or run `kentongan serve` there first")
            opened.store = stack.enter_context(contextlib.closing(
                Store.open(opened.config.data_dir, database_url=database_url)))
        if central:
            opened.central = stack.enter_context(contextlib.closing(opened.central_config.open_store()))
    except ConfigError as error:
        stack.close()
        _fail(f"config error: {error}")
    except PrefixTaken as error:
        stack.close()
        _fail(f"config error: gateway.ref_prefix: {error}")
    except FlowError as error:
        stack.close()
        _fail(f"menu or catalog error: {error}")
    except (OSError, StoreError, *_postgres_errors()) as error:
        stack.close()
        _fail(f"cannot open the store: {error}")
    with stack:
        yield opened


def _secret(config: Config) -> str:
    if not config["sync.secret"]:
        _fail("sync.secret is not set (or KENTONGAN_SYNC_SECRET): sync and batch files are signed with it")
    return config["sync.secret"]


@click.group()
def main() -> None:
    """Kentongan: an offline-first SMS/USSD gateway for village public services."""
    setup_logging(logging.WARNING)  # every command's log lines pass the masking filter


def _serve(apps: list[Served], config: Config, supervisor: Supervisor | None = None) -> None:
    """Serve `apps` (with `supervisor`, the parent's own beside its workers) until stopped."""
    problem = exposure_problem(config, apps)
    if problem:
        _fail(f"config error: {problem}")
    setup_logging()
    if config.source is None:
        log.info("no config.yaml here: serving on defaults, data in %s", config.data_dir)
    try:
        if supervisor is None:
            run_apps(apps)
        elif code := supervisor.run():
            sys.exit(code)  # a worker already said why, in one line
    except PrefixTaken as error:  # the config's own gateway, registered as the central backend starts
        _fail(f"config error: gateway.ref_prefix: {error}")
    except (OSError, StoreError, *_postgres_errors()) as error:
        _fail(f"cannot serve: {error}")


workers_option = click.option(
    "--workers", type=click.IntRange(1, 256), default=1, show_default=True,
    help="Processes serving on one port (SO_REUSEPORT), kept running by this one; more than 1 needs a "
         "PostgreSQL store (gateway.database_url, or central.database_url for `central serve`).")
worker_option = click.option("--worker", type=click.IntRange(1), default=None, hidden=True,
                             help="Set by the parent of --workers: this process is that worker.")


def _several(workers: int, database_url: str, key: str) -> None:
    """Refuse several workers on a SQLite store: each process would hold its own writer on one file."""
    if workers > 1 and not database_url:
        _fail(f"--workers {workers} needs a store that several processes share: set {key} to a PostgreSQL "
              f"address (the SQLite store serves one process), or serve with --workers 1")


def _worker_args(config_path: str | None, *command: str, workers: int) -> list[str]:
    return [*command, "--workers", str(workers), *(["--config", config_path] if config_path else [])]


def _postgres_errors() -> tuple[type[Exception], ...]:
    """asyncpg's errors, when a store loaded it (none can be raised otherwise): caught as one line each."""
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return ()
    return asyncpg.PostgresError, sys.modules["sync.sql"].IntegrityError  # a constraint, raised as SQLite's kind


def _metrics_folder() -> None:
    """Make the folder an operator named in PROMETHEUS_MULTIPROC_DIR, before any metric is made in it."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            _fail(f"cannot make PROMETHEUS_MULTIPROC_DIR {folder}: {error.strerror or error}")


@main.command()
@config_option
@workers_option
@worker_option
def serve(config_path, workers: int, worker: int | None) -> None:
    """Serve the gateway (USSD and SMS callbacks, SMS sender, sync) until stopped.

    With `central.embedded`, the central backend runs beside it (in the parent, once, with --workers).
    """
    _metrics_folder()
    with _opened(config_path, engine=True, require_file=False) as opened:
        config = opened.config
        _several(workers, config["gateway.database_url"], "gateway.database_url")
        if worker is not None:  # one of the parent's workers: the gateway alone, on the shared port
            apps = [gateway_served(config, opened.engine, workers)]
            tag_worker(apps[0].app)
        else:
            apps = create_apps(config, opened.engine)
    if worker is not None or workers == 1:
        _serve(apps, config)
        return
    own = [served for served in apps if served.name != "gateway"]
    argv = _worker_args(config_path, "serve", workers=workers)
    _serve(apps, config, Supervisor("gateway", workers, lambda index: worker_command(argv, index), own))


@main.group()
def central() -> None:
    """The reference central backend."""


@central.command("serve")
@config_option
@workers_option
@worker_option
def central_serve(config_path, workers: int, worker: int | None) -> None:
    """Serve the central backend (sync API, staff API, Open311) until stopped."""
    _metrics_folder()
    with _opened(config_path, engine=True, require_file=False) as opened:
        config = opened.config
        _several(workers, config["central.database_url"], "central.database_url")
        app = create_central_app(opened.central_config, page_settings(config, opened.engine))
    served = Served("central backend", app, config["central.host"], config["central.port"],
                    ServerLimits.from_config(config).per_worker(workers), reuse_port=workers > 1)
    if worker is not None:
        tag_worker(app)
    if worker is not None or workers == 1:
        _serve([served], config)
        return
    argv = _worker_args(config_path, "central", "serve", workers=workers)
    _serve([served], config, Supervisor("central backend", workers, lambda index: worker_command(argv, index), []))


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(config_path, as_json: bool) -> None:
    """What the local store holds: submissions by state, open USSD sessions, the SMS outbox, the sync link."""
    with _opened(config_path, store=True) as opened:
        counts = opened.store.counts()
        counts["sync"]["central_prefix"] = opened.store.meta("sync_central_prefix")
        counts["limits"] = stored_counts(opened.store)
        if opened.config["sessions.backend"] == "redis":
            counts["ussd_sessions_open"] = _redis_sessions_open(opened.config, opened.store)
        prefix = opened.config["gateway.ref_prefix"]
    if as_json:
        click.echo(json.dumps(counts, indent=2, sort_keys=True))
        return
    subs = counts["submissions"]
    click.echo(f"submissions: {subs['total']}")
    for state, number in sorted(subs["by_sync_state"].items()):
        click.echo(f"  sync {state}: {number}")
    for state, number in sorted(subs["by_status"].items()):
        click.echo(f"  status {state}: {number}")
    click.echo(f"open USSD sessions: {counts['ussd_sessions_open']}")
    for state, number in counts["outbox"].items():
        if number:
            click.echo(f"outbox {state}: {number}")
    link = counts["sync"]
    click.echo(f"sync: {link['pending']} pending, {link['sent']} sent, {link['rejected']} rejected; "
               f"last success {link['last_success'] or 'never'}")
    if link["refused"]:
        click.echo(f"sync: refused: {link['refused']}")
    elif _newer(link["last_error_at"], link["last_success"]) and link["last_error"]:
        click.echo(f"sync: last error at {link['last_error_at']}: {link['last_error']}")
    if link["central_prefix"] and link["central_prefix"] != prefix:
        click.echo(_prefix_differs(link["central_prefix"], prefix))
    limits = counts["limits"]
    click.echo(f"rate limits: {limits['refused_ussd_sessions']} USSD sessions refused, {limits['refused_sms']} SMS "
               f"refused, {limits['held_submissions']} submissions held for review")


def _redis_sessions_open(config: Config, store: Store) -> int | str:
    """How many USSD sessions in Redis have not ended, or why Redis could not tell."""
    async def count() -> int:
        from sync.sessions import RedisSessions  # redis is loaded only when sessions live there
        sessions = RedisSessions.from_url(config["sessions.redis_url"], store.sealer, config["sessions.redis_prefix"],
                                          keep=dt.timedelta(hours=config["ussd.keep_sessions_hours"]),
                                          resume_window=dt.timedelta(minutes=config["ussd.resume_minutes"]),
                                          clock=store.clock)
        try:
            return await sessions.count_open()
        finally:
            await sessions.close()

    try:
        return asyncio.run(count())
    except SessionsUnavailable as error:
        return f"unknown (Redis: {error})"


def _newer(when: str | None, than: str | None) -> bool:
    """True when the time `when` is known and later than `than` (or `than` never happened)."""
    if not when:
        return False
    return than is None or dt.datetime.fromisoformat(when) > dt.datetime.fromisoformat(than)


def _prefix_differs(known: str, configured: str) -> str:
    return (f"sync: the central backend knows this gateway by reference prefix {known}, but gateway.ref_prefix "
            f"is {configured}: it refuses submissions whose references do not start with {known}")


@main.command()
@config_option
@click.option("--phone", default="+6281234567890", show_default=True, help="The caller's number (E.164).")
@click.option("--service-code", default="*384*1#", show_default=True, help="The code the caller dials.")
@click.option("--url", default=None, help="Gateway callback URL (default: gateway.host and gateway.port).")
@click.option("--lang", default=None, help="The caller's language (one of language.available), set at the gateway "
              "as its language menu sets it; needs simulator.enabled there.")
def simulate(config_path, phone: str, service_code: str, url: str | None, lang: str | None) -> None:
    """A feature phone in the terminal: dial a running gateway and type answers; after the session ends, the SMS
    the number received (read from the gateway's /simulator, when simulator.enabled)."""
    with _opened(config_path, require_file=False) as opened:
        config = opened.config
    if lang is not None and lang not in config["language.available"]:
        _fail(f"--lang: {lang!r} is not one of language.available ({', '.join(config['language.available'])})")
    url = url or f"http://{config['gateway.host']}:{config['gateway.port']}/ussd/africastalking"
    params = {"key": config["gateway.callback_secret"]} if config["gateway.callback_secret"] else {}
    try:
        asyncio.run(_simulate(url, params, str(ULID()), phone, service_code, lang))
    except (OSError, aiohttp.ClientError) as error:
        _fail(f"cannot reach the gateway at {url}: {error}")


async def _simulate(url: str, params: dict, session_id: str, phone: str, service_code: str,
                    lang: str | None = None) -> None:
    history: list[str] = []
    parts = urlsplit(url)
    simulator = f"{parts.scheme}://{parts.netloc}/simulator"
    async with aiohttp.ClientSession() as http:
        if lang is not None:
            async with http.post(f"{simulator}/language", data={"phone": phone, "language": lang}) as response:
                if response.status != 200:
                    _fail(f"cannot set the language: {simulator}/language answered {response.status} "
                          f"(is simulator.enabled off at the gateway?)")
        seen = await _sms_received(http, simulator, phone)
        while True:
            form = {"sessionId": session_id, "serviceCode": service_code, "phoneNumber": phone,
                    "networkCode": "00000", "text": "*".join(history)}
            async with http.post(url, data=form, params=params) as response:
                body = await response.text()
            if response.status != 200:
                _fail(f"gateway answered {response.status}: {body}")
            click.echo(body[4:])
            if not body.startswith("CON "):
                _show_new_sms(await _sms_received(http, simulator, phone), seen)
                return
            try:
                typed = input("> ")
            except EOFError:
                click.echo("(hung up)")
                return
            history.append(typed)


async def _sms_received(http: aiohttp.ClientSession, simulator: str, phone: str) -> list[dict] | None:
    """The SMS `phone` received, newest first, from the gateway's web phone; None when it is off there."""
    async with http.get(f"{simulator}/sms", params={"phone": phone}) as response:
        if response.status != 200:
            return None
        return (await response.json())["sms"]


def _show_new_sms(received: list[dict] | None, seen: list[dict] | None) -> None:
    """Print the SMS in `received` that were not in `seen` (before the session), oldest first."""
    if received is None or seen is None:
        click.echo("(the SMS this number received are not shown: simulator.enabled is off at the gateway)", err=True)
        return
    before = {message["id"] for message in seen}
    for message in reversed(received):
        if message["id"] not in before:
            click.echo(f"SMS ({message['state']}): {message['text']}")


@main.command()
@config_option
@click.option("--state", type=click.Choice(list(OUTBOX_STATES)), default=None,
              help="Only messages in this state (dead: given up, for an operator to look at).")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def outbox(config_path, state: str | None, limit: int, as_json: bool) -> None:
    """The SMS outbox, newest first: state, attempts, why, and the text (numbers masked)."""
    with _opened(config_path, store=True) as opened:
        rows = opened.store.outbox.latest(state, limit)
    shown = [{"id": r["id"], "to": mask_phone(r["phone"]), "kind": r["kind"], "state": r["state"],
              "attempts": r["attempts"], "reason": r["reason"], "created_at": r["created_at"],
              "updated_at": r["updated_at"], "text": r["body"]} for r in rows]
    if as_json:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    for row in shown:
        why = f" ({row['reason']})" if row["reason"] else ""
        click.echo(f"{row['created_at'][:19]} {row['to']} {row['kind']} {row['state']} "
                   f"x{row['attempts']}{why}: {row['text']}")


@main.command()
@config_option
def purge(config_path) -> None:
    """Delete now what is kept no longer (serve does it hourly): personal fields of acknowledged submissions
    past privacy.retention_days, final SMS past sms.keep_days, old USSD sessions and SMS ids."""
    with _opened(config_path, store=True) as opened:
        gone = housekeep(opened.store, opened.config)
        days = opened.config["privacy.retention_days"]
    click.echo(f"{gone['submissions_erased']} submissions acknowledged over {days} days ago erased to reference, "
               f"service, status and dates; {gone['sms']} old SMS, {gone['ussd_sessions']} USSD sessions and "
               f"{gone['sms_ids']} SMS ids deleted")


@main.command("rotate-key")
@config_option
@click.option("--batch-size", type=click.IntRange(1, 100000), default=BATCH_SIZE, show_default=True,
              help="Values re-sealed per transaction: a kill loses at most one batch.")
def rotate_key_command(config_path, batch_size: int) -> None:
    """Re-seal every personal field of the gateway's store under a new sealing key, then delete the old key
    from gateway.key. The digest key that phone numbers and claims are found by stays as it is.

    Stop `serve` first (it refuses while the gateway answers on gateway.host and gateway.port). Killed
    midway, the store still opens every value: run it again and it finishes the same rotation.
    """
    with _opened(config_path, store=True) as opened:
        where = _serving(opened.config)
        if where:
            _fail(f"the gateway answers on {where}: stop `kentongan serve` first, or it would keep sealing "
                  f"with the old key")
        try:
            done = rotate_key(opened.store, batch_size)
        except (OSError, sqlite3.Error, *_postgres_errors(), KeyFileError) as error:
            _fail(f"key rotation stopped, run it again to finish: {error}")
        shared = opened.store.postgres
    resumed = "finished the interrupted rotation: " if done.resumed else ""
    odd = f"; {done.unopened} values that look sealed but do not open left as they are" if done.unopened else ""
    click.echo(f"{resumed}re-sealed {done.resealed} values under key {done.generation}; "
               f"key {', '.join(map(str, done.removed))} is gone from {KEY_FILE_NAME}{odd}")
    if shared:
        click.echo(f"copy {KEY_FILE_NAME} to every machine that serves this PostgreSQL store before starting it")


def _serving(config: Config) -> str | None:
    """`host:port` when something accepts connections where the gateway serves, else None."""
    host, port = config["gateway.host"], config["gateway.port"]
    reach = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    try:
        socket.create_connection((reach, port), timeout=1).close()
    except OSError:
        return None
    return f"{host}:{port}"


@main.command("sync")
@config_option
def sync_now(config_path) -> None:
    """Run one sync round now: push pending submissions, pull status updates."""
    with _opened(config_path, engine=True, store=True) as opened:
        config, engine = opened.config, opened.engine
        _secret(config)
        pending = opened.store.counts()["sync"]["pending"]
    sent = {"bytes": 0}
    with click.progressbar(length=max(pending, 1), label="pushing", show_pos=True, file=sys.stderr,
                           item_show_func=lambda _: f"{sent['bytes']} bytes") as bar:
        def progress(items: int, size: int) -> None:
            sent["bytes"] += size
            bar.update(items, current_item=True)

        try:
            summary = asyncio.run(sync_once(config, engine, progress))
        except SyncError as error:
            _fail(f"sync failed: {error}")
    rate = summary.pushed / summary.seconds if summary.seconds else 0.0
    click.echo(f"pushed {summary.pushed} ({summary.accepted} new, {summary.duplicate} already there, "
               f"{summary.rejected} rejected), {summary.wire_bytes} bytes, {rate:.0f} items/s; "
               f"pulled {summary.updates} status updates, {_notices(summary.notices, summary.suppressed)}")
    if summary.prefix and summary.prefix != config["gateway.ref_prefix"]:
        click.echo(_prefix_differs(summary.prefix, config["gateway.ref_prefix"]))


def _notices(queued: int, suppressed: int) -> str:
    return f"{queued} SMS notices queued, {suppressed} not sent (the number said STOP)"


@main.command("export")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
def export_batch(config_path, file: str) -> None:
    """Write every unsynced submission into one signed, compressed batch FILE for the central backend."""
    with _opened(config_path, store=True) as opened:
        try:
            count, size = export_file(opened.store, opened.config["gateway.id"], _secret(opened.config), file)
        except BatchFileError as error:
            _fail(str(error))
    click.echo(f"exported {count} submissions to {file} ({size} bytes); they stay pending until "
               f"the central backend's answer is imported")


@main.command("import")
@config_option
@click.argument("file", type=click.Path(dir_okay=False))
def import_batch(config_path, file: str) -> None:
    """Apply a batch FILE from the central backend: acknowledgements and status updates (with their SMS notices)."""
    with _opened(config_path, engine=True, store=True) as opened:
        config = opened.config
        try:
            acked, applied = import_file(opened.store, opened.engine, Rules.from_config(config),
                                         config["gateway.id"], _secret(config), file)
        except BatchFileError as error:
            _fail(str(error))
    click.echo(f"{acked} submissions acknowledged, {applied.updates} status updates applied, "
               f"{_notices(applied.queued, applied.suppressed)}")


@central.command("import")
@config_option
@click.argument("file", type=click.Path(dir_okay=False))
def central_import(config_path, file: str) -> None:
    """Ingest a gateway's batch FILE through the same idempotent path as online sync."""
    with _opened(config_path, central=True) as opened:
        try:
            gateway_id, results = import_batch_file(opened.central, file)
        except BatchFileError as error:
            _fail(str(error))
        held = opened.central.held(gateway_id, [r["id"] for r in results if r["result"] == "accepted"])
    count = {kind: sum(r["result"] == kind for r in results) for kind in ("accepted", "duplicate", "rejected")}
    click.echo(f"{len(results)} submissions from {gateway_id}: {count['accepted']} new, "
               f"{count['duplicate']} already there, {count['rejected']} rejected")
    for result in results:
        if result["result"] == "rejected":
            click.echo(f"  rejected {result['id']}: {result['reason']}")
    for row in held:
        click.echo(f"  held for review {row['ref']}: {row['review_reason']}")


@central.command("export-updates")
@config_option
@click.option("--gateway", "gateway_id", required=True, help="The gateway the file is for.")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
def central_export_updates(config_path, gateway_id: str, file: str) -> None:
    """Write acknowledgements and status updates for one gateway into a signed batch FILE."""
    with _opened(config_path, central=True) as opened:
        try:
            acks, updates, size = export_updates_file(opened.central, gateway_id, file)
        except BatchFileError as error:
            _fail(str(error))
    click.echo(f"wrote {acks} acknowledgements and {updates} status updates for {gateway_id} to {file} ({size} bytes)")


@central.group("gateway")
def central_gateway() -> None:
    """The gateways this central backend knows (each with its sync secret)."""


@central_gateway.command("add")
@config_option
@click.argument("gateway_id")
@click.option("--secret", default=None, help="The gateway's sync secret; a new random one when left out.")
@click.option("--prefix", default=None,
              help="Its reference prefix (1-3 of 23456789ABCDEFGHJKMNPQRSTUVWXYZ); the first free one when left out.")
@click.option("--rotate", is_flag=True, help="Give a registered gateway a new secret; the old one keeps working "
                                             "for --grace-hours.")
@click.option("--grace-hours", type=click.IntRange(0, 24 * 365), default=72, show_default=True,
              help="With --rotate: how long the old secret keeps working.")
def central_gateway_add(config_path, gateway_id: str, secret: str | None, prefix: str | None, rotate: bool,
                        grace_hours: int) -> None:
    """Register GATEWAY_ID, or with --rotate give it a new secret; prints what goes in that gateway's config.

    A registered gateway is refused without --rotate: its secret is never overwritten.
    """
    if not gateway_id.strip() or len(gateway_id) > 64 or not gateway_id.isprintable():
        _fail("a gateway id is 1-64 printable characters")
    secret = secret or secrets.token_urlsafe(32)
    with _opened(config_path, central=True) as opened:
        try:
            if rotate:
                gateway = opened.central.rotate_secret(gateway_id, secret, dt.timedelta(hours=grace_hours), prefix)
                prefix = gateway["prefix"]
            else:
                prefix = opened.central.add_gateway(gateway_id, secret, prefix)
        except GatewayExists as error:
            _fail(f"{error}; --rotate gives it a new secret (the old one keeps working for --grace-hours)")
        except RegistrationError as error:
            _fail(f"cannot {'rotate the secret of' if rotate else 'register'} gateway {gateway_id}: {error}")
    if rotate:
        until = "stopped working" if not grace_hours else f"keeps working until {gateway['previous_until'][:16]} UTC"
        click.echo(f"gateway {gateway_id} has a new secret; the old one {until}.")
    else:
        click.echo(f"gateway {gateway_id} registered.")
    click.echo(f"Put these in that gateway's config:\n  gateway.ref_prefix: {prefix}\n  sync.secret: {secret}")


@central_gateway.command("list")
@config_option
def central_gateway_list(config_path) -> None:
    """The registered gateways: reference prefix, since when, how many submissions each delivered."""
    with _opened(config_path, central=True) as opened:
        gateways = opened.central.gateways()
    for gateway in gateways:
        rotating = f"\told secret until {gateway['previous_until'][:16]}" if gateway["previous_until"] else ""
        click.echo(f"{gateway['id']}\tprefix {gateway['prefix'] or '(none)'}\tsince {gateway['created_at'][:10]}"
                   f"\t{gateway['submissions']} submissions{rotating}")


# -- accounts -------------------------------------------------------------------

password_option = click.option("--password", default=None,
                               help=f"The password (at least {PASSWORD_MIN} characters); asked for when left out.")


def _password(given: str | None) -> str:
    """`--password`, or one typed twice at a prompt (read from standard input when it is no terminal)."""
    if given is not None:
        return given
    try:
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    except click.Abort:
        _fail("no password: give --password, or type it when asked")


def _add_account(store: Store | CentralStore, name: str, role: str, password: str | None, agency: str = "") -> None:
    """Hash outside the store's write lock, then add the account and its audit row in one transaction."""
    accounts = store.accounts
    password = _password(password)
    try:
        check_password(password)
        password_hash = hash_password(password)
        with store.transaction():
            accounts.add_hashed(name, role, password_hash, agency)
            accounts.audit("cli", "account-add", name, f"role {role}" + (f", agency {agency}" if agency else ""))
    except AccountError as error:
        _fail(str(error))


def _disable_account(store: Store | CentralStore, name: str) -> dict:
    try:
        with store.transaction():
            account = store.accounts.disable(name)
            store.accounts.audit("cli", "account-disable", name)
    except AccountError as error:
        _fail(str(error))
    return account


def _echo_accounts(rows: list[dict], agency: bool, add_hint: str) -> None:
    """The accounts as a table: name, role, (agency), created, last sign-in, disabled; never a hash."""
    if not rows:
        click.echo(f"no accounts yet: {add_hint}")
        return
    header = ("name", "role") + (("agency",) if agency else ()) + ("created", "last sign-in", "disabled")
    table = [header] + [
        (row["name"], row["role"]) + ((row["agency"],) if agency else ())
        + (row["created_at"][:16], (row["last_login_at"] or "never")[:16], (row["disabled_at"] or "-")[:16])
        for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


@main.group()
def operator() -> None:
    """Kiosk operators' accounts on this gateway."""


@operator.command("add")
@config_option
@click.argument("name")
@click.option("--role", required=True, help=f"The account's role: {', '.join(ROLES['gateway'])}.")
@password_option
def operator_add(config_path, name: str, role: str, password: str | None) -> None:
    """Add the operator account NAME (1-40 letters, digits and . _ @ -)."""
    with _opened(config_path, store=True) as opened:
        _add_account(opened.store, name, role, password)
    click.echo(f"operator {name} added with role {role}")


@operator.command("list")
@config_option
def operator_list(config_path) -> None:
    """The operator accounts: role, when made, last sign-in, when disabled."""
    with _opened(config_path, store=True) as opened:
        rows = opened.store.accounts.list()
    _echo_accounts(rows, agency=False, add_hint="kentongan operator add NAME --role ROLE")


@operator.command("disable")
@config_option
@click.argument("name")
def operator_disable(config_path, name: str) -> None:
    """Disable the operator account NAME: its sessions end at once. Accounts are never deleted (the audit log
    names them)."""
    with _opened(config_path, store=True) as opened:
        account = _disable_account(opened.store, name)
    click.echo(f"operator {name} disabled since {account['disabled_at'][:16]}; its sessions are ended")


@central.group("staff")
def central_staff() -> None:
    """District staff accounts on the central backend."""


@central_staff.command("add")
@config_option
@click.argument("name")
@click.option("--role", required=True, help=f"The account's role: {', '.join(ROLES['central'])}.")
@click.option("--agency", required=True, help="The agency (district office) the account works for.")
@password_option
def central_staff_add(config_path, name: str, role: str, agency: str, password: str | None) -> None:
    """Add the staff account NAME (1-40 letters, digits and . _ @ -)."""
    with _opened(config_path, central=True) as opened:
        _add_account(opened.central, name, role, password, agency)
    click.echo(f"staff {name} added with role {role}, agency {agency}")


@central_staff.command("list")
@config_option
def central_staff_list(config_path) -> None:
    """The staff accounts: role, agency, when made, last sign-in, when disabled."""
    with _opened(config_path, central=True) as opened:
        rows = opened.central.accounts.list()
    _echo_accounts(rows, agency=True, add_hint="kentongan central staff add NAME --role ROLE --agency A")


@central_staff.command("disable")
@config_option
@click.argument("name")
def central_staff_disable(config_path, name: str) -> None:
    """Disable the staff account NAME: its sessions end and its API tokens stop working at once. Accounts are
    never deleted (the audit log names them)."""
    with _opened(config_path, central=True) as opened:
        account = _disable_account(opened.central, name)
    click.echo(f"staff {name} disabled since {account['disabled_at'][:16]}; its sessions are ended and its "
               f"API tokens revoked")


@central_staff.command("token")
@config_option
@click.argument("name")
@click.option("--label", default="", help="What the token is for, to tell it apart later.")
def central_staff_token(config_path, name: str, label: str) -> None:
    """Issue a staff API token for NAME (sent as `Authorization: Bearer`); only its digest is kept."""
    with _opened(config_path, central=True) as opened:
        accounts = opened.central.accounts
        try:
            with opened.central.transaction():
                token = accounts.issue_token(name, label)
                accounts.audit("cli", "token-issue", name, label)
        except AccountError as error:
            _fail(str(error))
    click.echo(f"API token for {name}:\n  {token}\nIt will not be shown again: keep it now. "
               f"`kentongan central staff disable {name}` revokes it with the account.")


@central.command("purge")
@config_option
def central_purge(config_path) -> None:
    """Erase now what the central backend erases daily: the answers, phone number and place of submissions
    whose status has been final (resolved, rejected) and unchanged for central.retention_days."""
    with _opened(config_path, central=True) as opened:
        retention = opened.central_config.retention
        if retention is None:
            click.echo("central.retention_days is 0: every submission is kept whole, nothing was erased")
            return
        erased = opened.central.purge_personal(retention)
    click.echo(f"{erased} submissions final and unchanged for over {retention.days} days erased to reference, "
               f"service, status, note, dates and gateway")
