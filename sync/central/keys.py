"""The central app's keys, in a module of their own: the page modules read them without importing app.py,
which imports them."""

from aiohttp import web

from ..thread import StoreThread
from .config import CentralConfig

central_config_key = web.AppKey("central_config", CentralConfig)
central_store_key = web.AppKey("central_store", StoreThread)
body_limits_key = web.AppKey("body_limits", dict)
"""Per handler, the most body bytes its route reads (`app.bounded_body`)."""
