"""Logging that never carries a full phone number, NIK or name.

Code logs phones through `mask_phone` and never logs answers. As a safety
net, `MaskingFilter` rewrites any long run of digits left in a record:
`+6281234567890` becomes `+62812****890`, a bare 16-digit NIK becomes
`[16 digits]`.
"""

from __future__ import annotations

import logging
import re

_DIGITS = re.compile(r"\+?\d{9,}")


def mask_phone(phone: str) -> str:
    """`+6281234567890` -> `+62812****890`: enough to tell callers apart, not to call them."""
    if len(phone) < 9:
        return "****"
    return f"{phone[:6]}****{phone[-3:]}"


def _mask(match: re.Match) -> str:
    found = match.group(0)
    return mask_phone(found) if found.startswith("+") else f"[{len(found)} digits]"


class MaskingFilter(logging.Filter):
    """Mask phone numbers and ID numbers in every record that passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _DIGITS.sub(_mask, message)
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
