"""The flow engine, pure: menus in, screens out. No I/O but reading menus and catalogs at load.

Public surface: `Engine`, `Context`, `Turn`, `Lookup`, and the errors in `errors.py`.
"""

from .engine import Context, Engine, Lookup, Turn
from .errors import CatalogError, FlowError, MenuError, SessionOutdated

__all__ = ["CatalogError", "Context", "Engine", "FlowError", "Lookup", "MenuError", "SessionOutdated", "Turn"]
