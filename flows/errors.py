"""Errors of the flow engine.

    FlowError             a bug, not bad input: an illegal trigger, a route a menu lacks
    ├── SessionOutdated   a saved session names a flow or screen the menus no longer have:
    │                     they changed since it was saved (the one FlowError that is no bug;
    │                     the caller starts the session again)
    ├── MenuError         a menu file is wrong; the message names the file and the screen
    └── CatalogError      a catalog is missing, or lacks a message a menu or the engine uses

Bad input from a caller is never an exception: it is the `invalid` route,
which re-asks the same screen with a short reason.
"""


class FlowError(Exception):
    """An illegal step: the engine or a menu has a bug."""


class SessionOutdated(FlowError):
    """A session saved under menus that have changed since."""


class MenuError(FlowError):
    """A menu definition cannot be compiled."""


class CatalogError(FlowError):
    """A language catalog is missing or incomplete."""
