"""Errors of gateway/: what goes wrong at the edge, and what each becomes.

    GatewayError
    ├── Permanent              retrying the same thing cannot help
    │   ├── ConfigError        a setting is unknown or has a bad value; the message names it
    │   │                      (the CLI prints it as one line and stops)
    │   └── BadCallback        a provider callback whose fields are missing or malformed;
    │                          the message is the reason of the 400
    └── Retryable              may heal by itself: try again later, with backoff
        └── ProviderError      an SMS send that may succeed later: network failure, 5xx,
                               an answer that cannot be read

Errors of the layers below keep their own hierarchies (`flows.errors`,
`sync.errors`); the error middleware in `app.py` is the one place that turns
an unexpected exception into an answer (a logged ERROR and a polite `END`).
"""


class GatewayError(Exception):
    """Base of the errors gateway/ raises on purpose."""


class Permanent(GatewayError):
    """Retrying the same thing cannot help."""


class Retryable(GatewayError):
    """May heal by itself: try again later."""


class ConfigError(Permanent):
    """A setting is unknown or has a bad value; the message names it."""


class BadCallback(Permanent, ValueError):
    """A callback whose fields are missing or malformed; the message is the reason (a 400)."""


class ProviderError(Retryable):
    """A send that may succeed later: network failure, 5xx, an answer we cannot read."""
