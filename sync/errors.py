"""Errors of the store and of replication.

    StoreError             the local store cannot do what was asked
    ├── DuplicateReference a new submission drew a reference already in use: draw again
    ├── AlreadyClaimed     a unique answer (a voter's NIK) is already used by another submission
    └── KeyFileError       the key that seals personal data is missing, unreadable or wrong
"""


class StoreError(Exception):
    """The local store failed."""


class DuplicateReference(StoreError):
    """The reference is taken; the caller should draw a new one and retry."""


class AlreadyClaimed(StoreError):
    """A unique answer was already claimed by an earlier submission."""


class KeyFileError(StoreError):
    """The sealing key cannot be used."""
