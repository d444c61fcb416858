"""Refusals before a server faces a network: no demo secret, no web phone and no open callbacks off loopback.

The shipped `config.yaml` is a demo: its secrets end in `change-me` and its
callbacks take no key, which is harmless while everything listens on
127.0.0.1 and dangerous anywhere else. A server bound to any other address
is refused with one line naming the setting to change.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from .app import Served
from .config import Config

DEMO_MARK = "change-me"
"""Part of every secret in the shipped demo config."""
SECRETS = ("gateway.callback_secret", "sync.secret", "central.staff_token", "central.open311_api_key")


def is_loopback(host: str) -> bool:
    """True when `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost, or "" (every address)


def exposure_problem(config: Config, served: Iterable[Served]) -> str | None:
    """Why serving `served` as configured would expose the gateway, or None when it would not."""
    exposed = [s for s in served if not is_loopback(s.host)]
    if not exposed:
        return None
    where = ", ".join(f"{s.name} on {s.host or '*'}:{s.port}" for s in exposed)
    for key in SECRETS:
        if DEMO_MARK in str(config[key]):
            return f"{key}: still the demo's secret, and the {where} is not on loopback; set a secret of your own"
    if any(s.name == "gateway" for s in exposed) and config["simulator.enabled"]:
        return (f"simulator.enabled: true, and the {where} is not on loopback: anyone could read the SMS of "
                f"any number at /simulator; turn it off")
    if any(s.name == "gateway" for s in exposed) and not config["gateway.callback_secret"]:
        return (f"gateway.callback_secret: empty, and the {where} is not on loopback: anyone could post "
                f"USSD and SMS callbacks; set one and add ?key=<secret> to the callback URLs")
    return None
