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


@click.group()
def main() -> None:
    """Kentongan: an offline-first SMS/USSD gateway for village public services."""


@main.command()
@config_option
def serve(config_path) -> None:
    """Serve the gateway (USSD callback, health) until stopped."""
    from .app import create_app

    config = _config(config_path)
    setup_logging()
    try:
        app = create_app(config)
    except FlowError as error:
        _fail(f"menu or catalog error: {error}")
    host, port = config["gateway.host"], config["gateway.port"]
    log.info("gateway on http://%s:%d, data in %s", host, port, config.data_dir)
    try:
        web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)
    except (OSError, StoreError) as error:
        _fail(f"cannot serve on {host}:{port}: {error}")


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(config_path, as_json: bool) -> None:
    """What the local store holds: submissions by state, open USSD sessions, the SMS outbox by state."""
    config = _config(config_path)
    try:
        store = Store.open(config.data_dir)
    except (OSError, StoreError) as error:
        _fail(f"cannot open the store in {config.data_dir}: {error}")
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
    try:
        store = Store.open(config.data_dir)
    except (OSError, StoreError) as error:
        _fail(f"cannot open the store in {config.data_dir}: {error}")
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
