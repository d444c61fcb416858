"""Errors of sync/: the local store, batch files and replication.

    SyncError                  everything sync/ raises on purpose
    ├── Retryable              may heal by itself: try again later, with backoff
    │   ├── LinkError          the central backend is unreachable, slow or failing (5xx), or its
    │   │                      answer cannot be trusted (a captive portal's page, a proxy's error,
    │   │                      an unsigned or garbled answer); nothing was marked
    │   ├── SessionsUnavailable  Redis did not answer or refused: a USSD session could not be read or
    │   │                      written (`sync.sessions`)
    │   └── Deadlock           two transactions waited for each other's locks and the database gave
    │                          up one statement (a PostgreSQL store several workers share)
    ├── Permanent              will not heal by retrying: a person must act
    │   ├── Refused            the central backend refuses this gateway (unknown gateway, wrong
    │   │                      secret, clock far off, a batch it cannot read); `code` says which
    │   ├── BatchFileError     a batch file that must not be used (changed, truncated, foreign)
    │   └── StoreError         a store cannot do what was asked
    │       ├── AlreadyClaimed     a unique answer (a voter's NIK) is already used
    │       ├── NoFreeReference    no free reference was drawn: the prefix's space is nearly full
    │       └── KeyFileError       the key that seals personal data is missing, unreadable or wrong
    └── SignatureError         a request or answer whose signature cannot be trusted; the side
        │                      that checks it decides what that means (401, or a LinkError)
        └── ClockSkew          a request signed at a time too far from the checker's clock
"""


class SyncError(Exception):
    """Base of the errors sync/ raises on purpose."""


class Retryable(SyncError):
    """A failure that may heal by itself: retry later, with backoff."""


class Permanent(SyncError):
    """A failure that retrying cannot heal: a person must act."""


class LinkError(Retryable):
    """A sync round could not complete over the link; nothing was marked."""


class SessionsUnavailable(Retryable):
    """Redis did not answer, or refused: a USSD session could not be read or written (`sync.sessions`)."""


class Refused(Permanent):
    """The central backend refuses this gateway; `code` is one of `protocol.REFUSALS`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class BatchFileError(Permanent):
    """A batch file that must not be used; the message says why."""


class StoreError(Permanent):
    """A store failed to do what was asked."""


class AlreadyClaimed(StoreError):
    """A unique answer was already claimed by an earlier submission."""


class NoFreeReference(StoreError):
    """Every reference drawn was already in use."""


class KeyFileError(StoreError):
    """The sealing key cannot be used."""


class SignatureError(SyncError):
    """A request or answer whose signature cannot be trusted; the message says why."""


class ClockSkew(SignatureError):
    """A signed request whose timestamp is too far from the checker's clock: one of the clocks is wrong."""


class Deadlock(Retryable):
    """Two transactions waited for each other's locks and the database gave up a statement of one (a PostgreSQL
    store that several workers share: `Store.lock_session`). Its transaction still holds what it held; what
    gave up runs again once that transaction has ended (`sync.thread.StoreThread.call_grouped`)."""
