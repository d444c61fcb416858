"""Errors of the flow engine.

    FlowError           a bug, not bad input: an illegal trigger, a session no flow knows
    ├── MenuError       a menu file is wrong; the message names the file and the screen
    └── CatalogError    a catalog is missing, or lacks a message a menu or the engine uses

Bad input from a caller is never an exception: it is the `invalid` route,
which re-asks the same screen with a short reason.
"""


class FlowError(Exception):
    """An illegal step: the engine or a menu has a bug."""


class MenuError(FlowError):
    """A menu definition cannot be compiled."""


class CatalogError(FlowError):
    """A language catalog is missing or incomplete."""
