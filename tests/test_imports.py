"""Imports go one way: gateway -> flows, gateway -> sync; flows and sync never import each other or gateway."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"flows": {"sync", "gateway"}, "sync": {"flows", "gateway"}, "gateway": set()}


def imported_packages(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_imports_point_one_way():
    wrong = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imported_packages(path):
                if name in forbidden:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong


def test_imports_flows_does_no_io_beyond_loading():
    allowed_io = {"catalog.py", "menu.py"}  # they read menus and catalogs once, at load
    for path in (ROOT / "flows").glob("*.py"):
        names = set(imported_packages(path))
        assert not names & {"sqlite3", "socket", "aiohttp", "asyncio", "requests", "time"}, path.name
        if path.name not in allowed_io:
            assert "open(" not in path.read_text(), path.name
