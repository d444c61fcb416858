"""What every provider callback shares: one reading of the form, checked fields and E.164 numbers.

`read_form` is the one place a callback body is decoded. aiohttp's
`request.post()` raises whatever the decoding meets (`UnicodeDecodeError` for
raw invalid UTF-8, `LookupError` for an unknown charset, `ValueError` for a
broken multipart body, `InvalidHeader` for a part's bad header,
`RequestPayloadError` for an undecodable `Content-Encoding`), decodes
percent-escapes with `errors="replace"`, trusts any charset a client names
(`utf-7` smuggles lone surrogates in), passes an unknown `Content-Encoding`
through undecoded and keeps multipart fields of a non-text type as
`bytearray`. So a url-encoded body is decoded here, strictly, and a
multipart one is read by aiohttp and then checked; either way every value
handed on is Unicode text without surrogates or NUL (dropped), or the
request is refused with a 400 and its reason.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import logging
from urllib.parse import unquote_plus

import phonenumbers
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .errors import BadCallback
from .resources import config_key

log = logging.getLogger(__name__)

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CHARSETS = frozenset({"utf-8", "ascii", "iso8859-1"})
"""Charsets (as `codecs` names them) a url-encoded body may declare; providers send UTF-8."""
ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})
"""Content-Encodings a callback may use: aiohttp passes any other through undecoded, as if it were none."""
MAX_FIELDS = 32
MAX_VALUE = 8000
"""No callback field is longer; each callback checks its own fields more tightly."""


async def read_form(request: web.Request) -> dict[str, str]:
    """The callback's form fields as text (the first of repeated names), or `BadCallback` with the reason.

    The body must arrive within `server.read_seconds` (else 408); a body over
    the app's size limit is a 413 from aiohttp. A body of another type is no
    form, as for aiohttp: the fields the callback needs are then missing.
    """
    if request.content_type not in FORM_TYPES:
        return {}
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in ENCODINGS:
        raise BadCallback(f"Content-Encoding must be one of {', '.join(sorted(filter(None, ENCODINGS)))}")
    try:
        if request.content_type != "multipart/form-data" and request.content.is_eof() and not coding:
            # The whole body came with the head (a provider's callback is a few hundred bytes): nothing to wait
            # for, so no timer to arm and cancel on the hop's path.
            pairs = _urlencoded(await request.read(), request.charset)
        else:
            async with asyncio.timeout(request.app[config_key]["server.read_seconds"]):
                if request.content_type == "multipart/form-data":
                    pairs = await _multipart(request)
                else:
                    pairs = _urlencoded(await request.read(), request.charset)
    except TimeoutError:
        log.warning("%s %s: 408, the body did not arrive in time", request.method, request.path)
        raise web.HTTPRequestTimeout(text="the request body did not arrive in time") from None
    except web.HTTPRequestEntityTooLarge:
        log.warning("%s %s: 413, the body is too large", request.method, request.path)
        raise
    except web.RequestPayloadError as error:
        raise BadCallback(f"the body cannot be read: {str(error).splitlines()[-1].strip()}") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name not in form:
            form[_text(name, name, True)] = _text(name, value)
    return form


@functools.lru_cache(maxsize=64)
def _codec(charset: str | None) -> str | None:
    """The `codecs` name of a declared charset, or None for one Python does not know."""
    try:
        return codecs.lookup(charset or "utf-8").name
    except LookupError:
        return None


def _urlencoded(body: bytes, charset: str | None) -> list[tuple[str, str]]:
    codec = _codec(charset)
    if codec not in CHARSETS:
        raise BadCallback("charset must be utf-8")
    try:
        return _parse_qsl(body.decode(codec), codec)
    except UnicodeDecodeError:
        raise BadCallback(f"the body is not valid {codec}") from None
    except ValueError:
        raise BadCallback(f"more than {MAX_FIELDS} form fields") from None


def _parse_qsl(text: str, codec: str) -> list[tuple[str, str]]:
    """`urllib.parse.parse_qsl(text, keep_blank_values=True, encoding=codec, errors="strict",
    max_num_fields=MAX_FIELDS)`, without unquoting what has nothing to unquote: most of a callback's fields
    (its names, the session id, the service code) have no `%` or `+`, and parse_qsl's unquoting was a
    tenth of a hop's CPU."""
    if text.count("&") >= MAX_FIELDS:
        raise ValueError("Max number of fields exceeded")
    pairs = []
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((_unquoted(name, codec), _unquoted(value, codec)))
    return pairs


def _unquoted(piece: str, codec: str) -> str:
    if "%" in piece or "+" in piece:
        return unquote_plus(piece, encoding=codec, errors="strict")
    return piece


async def _multipart(request: web.Request) -> list[tuple[str, object]]:
    try:
        return list((await request.post()).items())
    except UnicodeError:
        raise BadCallback("broken multipart body: a field is not valid text in its charset") from None
    except (ValueError, LookupError, HttpProcessingError) as error:  # a part's bad header is the last
        reason = getattr(error, "message", "") or str(error)
        raise BadCallback(f"broken multipart body: {reason.strip().splitlines()[0]}") from None


def _text(name: object, value: object, is_name: bool = False) -> str:
    """`value` (field `name`'s value, or with `is_name` the name itself) as text a store and an engine can take,
    else `BadCallback`.

    NUL is dropped, not refused: no keypad types it, and a typed answer with
    junk in it is re-asked by the engine like any other wrong input.
    """
    def bad(problem: str) -> BadCallback:  # the field's description is made only for a refusal
        return BadCallback(("a field name" if is_name else f"field {ascii(name)[:40]}") + " " + problem)

    if not isinstance(value, str):
        raise bad("is not text (a file or a non-text part)")
    if len(value) > MAX_VALUE:
        raise bad(f"is longer than {MAX_VALUE} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("is not valid Unicode text") from None
    return value.replace("\x00", "") if "\x00" in value else value


def refuse(request: web.Request, error: BadCallback) -> web.HTTPBadRequest:
    """The 400 for a malformed callback, logged as one WARNING line with the reason (never the values)."""
    log.warning("%s %s: 400, %s", request.method, request.path, error)
    return web.HTTPBadRequest(text=str(error))


def require(form, *names: str) -> None:
    """Raise `BadCallback` naming every field of `names` the form lacks."""
    missing = [name for name in names if name not in form]
    if missing:
        raise BadCallback(f"missing form field(s): {', '.join(missing)}")


def printable(form, name: str, longest: int, *, needed: bool = True) -> str:
    """Field `name`, stripped: at most `longest` printable characters, and not empty when `needed`.

    Such a field may be logged: no control character can forge a line.
    """
    value = form.get(name, "").strip()
    if needed and not value:
        raise BadCallback(f"{name} must be given, not empty")
    if len(value) > longest:
        raise BadCallback(f"{name} is longer than {longest} characters")
    if not value.isprintable():
        raise BadCallback(f"{name} must be printable characters only")
    return value


@functools.lru_cache(maxsize=4096)
def e164(raw: str, field: str = "phoneNumber") -> str:
    """A phone number in E.164 (`+6281234567890`), or `BadCallback`.

    Cached: every hop of a session repeats the number, and parsing it is a
    good share of a hop's work.
    """
    raw = raw.strip()
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise BadCallback(f"{field} must be in E.164 form, like +6281234567890") from None
    if not phonenumbers.is_possible_number(number):
        raise BadCallback(f"{field} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
