"""The `kentongan` command (also `python -m gateway`)."""

from __future__ import annotations

import json
import logging
import sys

import aiohttp
import click
from aiohttp import web

from flows import FlowError
from sync.errors import StoreError
from sync.outbox import STATES as OUTBOX_STATES
from sync.store import Store

from .config import ConfigError, load_config
from .log import mask_phone, setup_logging

log = logging.getLogger("kentongan")

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="Config file (default ./config.yaml). Any key can be overridden by KENTONGAN_<SECTION>_<KEY>.",
)


def _fail(message: str) -> None:
    click.echo(f"kentongan: {message}", err=True)
    sys.exit(2)


def _config(path):
    try:
        return load_config(path)
    except ConfigError as error:
        _fail(f"config error: {error}")


def _engine(config):
    from .resources import load_engine

    try:
        return load_engine(config)
    except FlowError as error:
        _fail(f"menu or catalog error: {error}")


def _store(config) -> Store:
    try:
        return Store.open(config.data_dir)
    except (OSError, StoreError) as error:
        _fail(f"cannot open the store in {config.data_dir}: {error}")


@click.group()
def main() -> None:
    """Kentongan: an offline-first SMS/USSD gateway for village public services."""
    setup_logging(logging.WARNING)  # every command's log lines pass the masking filter


@main.command()
@config_option
def serve(config_path) -> None:
    """Serve the gateway (USSD and SMS callbacks, SMS sender, sync) until stopped.

    With `central.embedded`, the central backend runs beside it.
    """
    from .app import create_app

    config = _config(config_path)
    setup_logging()
    try:
        apps = [("gateway", create_app(config), config["gateway.host"], config["gateway.port"])]
    except FlowError as error:
        _fail(f"menu or catalog error: {error}")
    if config["central.embedded"]:
        # First, so that the gateway's first sync round finds it up.
        apps.insert(0, ("central backend", _central_app(config), config["central.host"], config["central.port"]))
    _run(apps, config)


@main.group()
def central() -> None:
    """The reference central backend."""


@central.command("serve")
@config_option
def central_serve(config_path) -> None:
    """Serve the central backend (sync API, staff API) until stopped."""
    config = _config(config_path)
    setup_logging()
    _run([("central backend", _central_app(config), config["central.host"], config["central.port"])], config)


def _central_app(config):
    from sync.central import create_central_app

    from .catalogue import open311_services

    gateways = {config["gateway.id"]: config["sync.secret"]} if config["sync.secret"] else {}
    engine = _engine(config)
    try:
        services = open311_services(engine, config["central.open311_services"],
                                    "en" if "en" in engine.languages else engine.default_language)
    except FlowError as error:
        _fail(f"menu or catalog error: {error}")
    return create_central_app(config.data_dir, gateways, config["central.staff_token"], services=services,
                              open311_api_key=config["central.open311_api_key"],
                              ref_prefix=config["central.ref_prefix"], agency=config["central.agency"])


def _run(apps, config) -> None:
    """Serve `apps` ((name, app, host, port)...) on one event loop until SIGINT or SIGTERM."""
    import asyncio
    import signal

    async def serve_all() -> None:
        runners = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            for name, app, host, port in apps:
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, host, port).start()
                log.info("%s on http://%s:%d, data in %s", name, host, port, config.data_dir)
            await stop.wait()
        finally:
            for runner in reversed(runners):
                await runner.cleanup()

    try:
        asyncio.run(serve_all())
    except (OSError, StoreError) as error:
        _fail(f"cannot serve: {error}")


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(config_path, as_json: bool) -> None:
    """What the local store holds: submissions by state, open USSD sessions, the SMS outbox by state."""
    config = _config(config_path)
    store = _store(config)
    try:
        counts = store.counts()
    finally:
        store.close()
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
    if link["last_error"]:
        click.echo(f"sync: last error at {link['last_error_at']}: {link['last_error']}")


@main.command()
@config_option
@click.option("--phone", default="+6281234567890", show_default=True, help="The caller's number (E.164).")
@click.option("--service-code", default="*384*1#", show_default=True, help="The code the caller dials.")
@click.option("--url", default=None, help="Gateway callback URL (default: gateway.host and gateway.port).")
def simulate(config_path, phone: str, service_code: str, url: str | None) -> None:
    """A feature phone in the terminal: dial a running gateway and type answers."""
    import asyncio

    from ulid import ULID

    config = _config(config_path)
    url = url or f"http://{config['gateway.host']}:{config['gateway.port']}/ussd/africastalking"
    params = {"key": config["gateway.callback_secret"]} if config["gateway.callback_secret"] else {}
    try:
        asyncio.run(_simulate(url, params, str(ULID()), phone, service_code))
    except (OSError, aiohttp.ClientError) as error:
        _fail(f"cannot reach the gateway at {url}: {error}")


async def _simulate(url: str, params: dict, session_id: str, phone: str, service_code: str) -> None:
    history: list[str] = []
    async with aiohttp.ClientSession() as http:
        while True:
            form = {"sessionId": session_id, "serviceCode": service_code, "phoneNumber": phone,
                    "networkCode": "00000", "text": "*".join(history)}
            async with http.post(url, data=form, params=params) as response:
                body = await response.text()
            if response.status != 200:
                _fail(f"gateway answered {response.status}: {body}")
            click.echo(body[4:])
            if not body.startswith("CON "):
                return
            try:
                typed = input("> ")
            except EOFError:
                click.echo("(hung up)")
                return
            history.append(typed)


@main.command()
@config_option
@click.option("--state", type=click.Choice(list(OUTBOX_STATES)), default=None,
              help="Only messages in this state (dead: given up, for an operator to look at).")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def outbox(config_path, state: str | None, limit: int, as_json: bool) -> None:
    """The SMS outbox, newest first: state, attempts, why, and the text (numbers masked)."""
    config = _config(config_path)
    store = _store(config)
    try:
        rows = [row for row in reversed(store.outbox.messages()) if state is None or row["state"] == state][:limit]
    finally:
        store.close()
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


@main.command("sync")
@config_option
def sync_now(config_path) -> None:
    """Run one sync round now: push pending submissions, pull status updates."""
    import asyncio

    from sync.client import SyncError
    from sync.thread import StoreThread

    from .resources import Rules
    from .syncer import Syncer

    config = _config(config_path)
    if not config["sync.secret"]:
        _fail("sync is off: set sync.secret (or KENTONGAN_SYNC_SECRET)")
    engine = _engine(config)

    async def one_round():
        store = await StoreThread.open(Store.open, config.data_dir)
        try:
            pending = (await store.call(lambda s: s.counts()))["sync"]["pending"]
            syncer = Syncer(store, engine, Rules.from_config(config), url=config["central.url"],
                            gateway_id=config["gateway.id"], secret=config["sync.secret"],
                            batch_size=config["sync.batch_size"], timeout=config["sync.timeout_seconds"])
            sent = {"bytes": 0}
            with click.progressbar(length=max(pending, 1), label="pushing", show_pos=True, file=sys.stderr,
                                   item_show_func=lambda _: f"{sent['bytes']} bytes") as bar:
                def progress(items, size):
                    sent["bytes"] += size
                    bar.update(items, current_item=True)
                return await syncer.round(progress)
        finally:
            store.close()

    try:
        summary = asyncio.run(one_round())
    except SyncError as error:
        _fail(f"sync failed: {error}")
    rate = summary.pushed / summary.seconds if summary.seconds else 0.0
    click.echo(f"pushed {summary.pushed} ({summary.accepted} new, {summary.duplicate} already there, "
               f"{summary.rejected} rejected), {summary.wire_bytes} bytes, {rate:.0f} items/s; "
               f"pulled {summary.updates} status updates, {summary.notices} SMS notices queued")


def _sync_secret(config) -> str:
    if not config["sync.secret"]:
        _fail("sync.secret is not set: batch files are signed with it")
    return config["sync.secret"]


@main.command("export")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
def export_file(config_path, file: str) -> None:
    """Write every unsynced submission into one signed, compressed batch FILE for the central backend."""
    from sync import batchfile

    config = _config(config_path)
    secret = _sync_secret(config)
    store = _store(config)
    try:
        items, after = [], ""
        while batch := store.pending_submissions(1000, after):
            items += batch
            after = batch[-1]["id"]
    finally:
        store.close()
    try:
        size = batchfile.write(file, "submissions", config["gateway.id"], secret, {"items": items})
    except OSError as error:
        _fail(f"cannot write {file}: {error.strerror}")
    click.echo(f"exported {len(items)} submissions to {file} ({size} bytes); they stay pending until "
               f"the central backend's answer is imported")


@main.command("import")
@config_option
@click.argument("file", type=click.Path(dir_okay=False))
def import_file(config_path, file: str) -> None:
    """Apply a batch FILE from the central backend: acknowledgements and status updates (with their SMS notices)."""
    from sync import batchfile

    from .resources import Rules
    from .syncer import apply_updates

    config = _config(config_path)
    secret = _sync_secret(config)
    try:
        payload = batchfile.read(file, "updates", config["gateway.id"], secret)
    except batchfile.BatchFileError as error:
        _fail(str(error))
    acks, updates = payload.get("acks", []), payload.get("updates", [])
    if not isinstance(acks, list) or not isinstance(updates, list):
        _fail(f"{file} has a malformed payload")
    engine = _engine(config)
    store = _store(config)
    try:
        with store.transaction():
            tally = store.mark_synced([{"id": i, "result": "accepted"} for i in acks if isinstance(i, str)])
            applied, notices = apply_updates(store, engine, Rules.from_config(config), updates)
    finally:
        store.close()
    click.echo(f"{tally['accepted']} submissions acknowledged, {applied} status updates applied, "
               f"{notices} SMS notices queued")


@central.command("import")
@config_option
@click.argument("file", type=click.Path(dir_okay=False))
def central_import(config_path, file: str) -> None:
    """Ingest a gateway's batch FILE through the same idempotent path as online sync."""
    from sync import batchfile

    config = _config(config_path)
    store = _central_store(config)
    try:
        try:
            gateway_id = str(batchfile.peek(file).get("gateway"))
            secret = store.secret(gateway_id)
            if secret is None:
                _fail(f"{file} comes from gateway {gateway_id!r}, which this central backend does not know")
            payload = batchfile.read(file, "submissions", gateway_id, secret)
        except batchfile.BatchFileError as error:
            _fail(str(error))
        items = payload.get("items")
        if not isinstance(items, list):
            _fail(f"{file} has a malformed payload")
        results = store.ingest(gateway_id, items)
    finally:
        store.close()
    count = {kind: sum(r["result"] == kind for r in results) for kind in ("accepted", "duplicate", "rejected")}
    click.echo(f"{len(results)} submissions from {gateway_id}: {count['accepted']} new, "
               f"{count['duplicate']} already there, {count['rejected']} rejected")
    for result in results:
        if result["result"] == "rejected":
            click.echo(f"  rejected {result['id']}: {result['reason']}")


@central.command("export-updates")
@config_option
@click.option("--gateway", "gateway_id", required=True, help="The gateway the file is for.")
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
def central_export_updates(config_path, gateway_id: str, file: str) -> None:
    """Write acknowledgements and status updates for one gateway into a signed batch FILE."""
    from sync import batchfile

    config = _config(config_path)
    store = _central_store(config)
    try:
        secret = store.secret(gateway_id)
        if secret is None:
            _fail(f"unknown gateway {gateway_id!r}")
        acks = store.acks(gateway_id)
        updates = store.updates(gateway_id, 0, limit=10**9)
    finally:
        store.close()
    try:
        size = batchfile.write(file, "updates", gateway_id, secret, {"acks": acks, "updates": updates})
    except OSError as error:
        _fail(f"cannot write {file}: {error.strerror}")
    click.echo(f"wrote {len(acks)} acknowledgements and {len(updates)} status updates for {gateway_id} "
               f"to {file} ({size} bytes)")


def _central_store(config):
    from sync.central_store import CentralStore

    try:
        store = CentralStore.open(config.data_dir)
    except (OSError, StoreError) as error:
        _fail(f"cannot open the central store in {config.data_dir}: {error}")
    if config["sync.secret"]:
        store.register_gateway(config["gateway.id"], config["sync.secret"])
    return store


@central.group("gateway")
def central_gateway() -> None:
    """The gateways this central backend knows (each with its sync secret)."""


@central_gateway.command("add")
@config_option
@click.argument("gateway_id")
@click.option("--secret", default=None, help="The gateway's sync secret; a new random one when left out.")
def central_gateway_add(config_path, gateway_id: str, secret: str | None) -> None:
    """Register GATEWAY_ID (or give it a new secret); prints the secret to put in that gateway's sync.secret."""
    import secrets

    config = _config(config_path)
    if not gateway_id.strip() or len(gateway_id) > 64 or not gateway_id.isprintable():
        _fail("a gateway id is 1-64 printable characters")
    secret = secret or secrets.token_urlsafe(32)
    store = _central_store(config)
    try:
        store.register_gateway(gateway_id, secret)
    finally:
        store.close()
    click.echo(f"gateway {gateway_id} registered; its sync.secret is:\n{secret}")


@central_gateway.command("list")
@config_option
def central_gateway_list(config_path) -> None:
    """The registered gateways and how many submissions each delivered."""
    config = _config(config_path)
    store = _central_store(config)
    try:
        rows = store.db.execute(
            "SELECT g.id, g.created_at, count(s.id) FROM gateways g LEFT JOIN submissions s ON s.gateway_id = g.id "
            "GROUP BY g.id ORDER BY g.id").fetchall()
    finally:
        store.close()
    for gateway_id, created_at, count in rows:
        click.echo(f"{gateway_id}\tsince {created_at[:10]}\t{count} submissions")
