"""Logging that never carries a full phone number, NIK or name.

Code logs phones through `mask_phone` (`sync.seal`'s, re-exported here) and never logs answers. As a safety
net, `MaskingFilter` rewrites any long run of digits left in a record:
`+6281234567890` becomes `+62812****890`, a bare 16-digit NIK becomes
`[16 digits]`. It also escapes control characters (`\n` becomes `\x0a`),
so no value a caller sent can start a forged line of its own.

aiohttp's server logs every request it cannot parse (a bad header, an
undecodable `Content-Encoding`) as an ERROR with a traceback, though the
client is at fault and got its 400: `client_error_logger` is the logger the
servers hand aiohttp instead, which says so in one WARNING line.
"""

from __future__ import annotations

import logging
import re

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from sync.seal import mask_phone

__all__ = ["MaskingFilter", "client_error_logger", "mask_phone", "setup_logging"]

_DIGITS = re.compile(r"\+?\d{9,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _mask(match: re.Match) -> str:
    found = match.group(0)
    return mask_phone(found) if found.startswith("+") else f"[{len(found)} digits]"


def _escape(match: re.Match) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class MaskingFilter(logging.Filter):
    """Mask phone numbers and ID numbers, and escape control characters, in every record that passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _CONTROL.sub(_escape, _DIGITS.sub(_mask, message))
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # transitions logs every state change at INFO: noise on every USSD hop.
    logging.getLogger("transitions").setLevel(logging.WARNING)


class ClientErrorLogger(logging.LoggerAdapter):
    """aiohttp's server logger, with a client's malformed request as one WARNING line, not an ERROR.

    aiohttp answers such a request 400 by itself. When a handler already
    answered a body it could not read, aiohttp meets the same error again
    while draining the body: that one is not logged a second time.
    """

    def log(self, level, msg, *args, exc_info=None, **kwargs):
        error = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if isinstance(error, (HttpProcessingError, RequestPayloadError)):
            exc_info = None
            if msg == "Unhandled exception":
                level = logging.DEBUG  # met again while draining a body the handler already refused
            elif level >= logging.ERROR:
                reason = (getattr(error, "message", "") or str(error)).strip().splitlines()[-1].strip()
                msg, args, level = "malformed request refused: %s", (reason,), logging.WARNING
        super().log(level, msg, *args, exc_info=exc_info, **kwargs)


def client_error_logger() -> ClientErrorLogger:
    return ClientErrorLogger(logging.getLogger("aiohttp.server"), {})
