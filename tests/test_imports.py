"""Who imports whom among gateway/, flows/ and sync/, arrow by arrow, as DESIGN.md lays it out.

`python tests/test_imports.py` prints every module's arrows (module -> the project modules it imports).
Every import counts: relative ones, ones inside functions, ones under `if TYPE_CHECKING:` (a
dependency for the reader even when not at run time).
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "flows", "sync")
CENTRAL_MAY_IMPORT = {"sync.protocol", "sync.batchfile", "sync.database", "sync.seal", "sync.reference",
                      "sync.thread", "sync.sql", "sync.errors", "sync.limits", "sync.accounts", "sync.pages"}
IO_MODULES = {"socket", "sqlite3", "aiohttp", "asyncio", "requests", "urllib", "http", "subprocess", "time",
              "threading", "sqlite_utils"}
WRITES = {"write_text", "write_bytes", "mkdir", "unlink", "touch", "rename", "rmdir"}
CLOCK_READS = {"now", "today", "utcnow"}


def module_name(path, root=ROOT):
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parse(root=ROOT):
    """{module: (path, syntax tree)} for every .py of the three packages."""
    return {module_name(path, root): (path, ast.parse(path.read_text(), filename=str(path)))
            for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}


def imports(module, path, tree, modules):
    """(line, project module or None, top-level name) for every name `module` imports."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:max(0, len(package.split(".")) - node.level + 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from sync import protocol` imports the module sync.protocol; `from flows import Engine`, flows.
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            found = name
            while found and found not in modules:
                found = found.rpartition(".")[0]
            yield node.lineno, found or None, name.split(".")[0]


def arrows(trees):
    """{module: {imported project module: line of the first import}}."""
    graph = {}
    for module, (path, tree) in trees.items():
        graph[module] = {}
        for line, target, _ in imports(module, path, tree, trees):
            if target and target != module:
                graph[module].setdefault(target, line)
    return graph


def within(module, package):
    return module == package or module.startswith(package + ".")


def why_wrong(source, target):
    """The rule the arrow source -> target breaks, or None."""
    if within(source, "flows") and not within(target, "flows"):
        return "flows imports only flows"
    if within(source, "sync") and not within(target, "sync"):
        return "sync never imports flows or gateway"
    if within(source, "sync.central"):
        if not within(target, "sync.central") and target not in CENTRAL_MAY_IMPORT:
            return f"sync.central imports only sync.central.*, {', '.join(sorted(CENTRAL_MAY_IMPORT))}"
    elif within(source, "sync") and within(target, "sync.central"):
        return "only sync.central imports sync.central"
    if source == "sync.protocol" and target != "sync.errors":
        return "sync.protocol imports nothing of ours but sync.errors"
    if source == "sync.outbox" and target == "sync.store":
        return "the store may import the outbox, not the other way"
    return None


def cycles(graph):
    """Every import cycle a depth-first walk meets, as a list of modules (first == last)."""
    found, done, stack = [], set(), []

    def walk(module):
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target in stack:
                found.append(stack[stack.index(target):] + [target])
            elif target not in done:
                walk(target)
        stack.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            walk(module)
    return found


def where(trees, module, line, root=ROOT):
    return f"{trees[module][0].relative_to(root)}:{line}"


def test_imports_point_the_way_the_design_says():
    trees = parse()
    graph = arrows(trees)
    wrong = [f"{where(trees, source, line)}: {source} -> {target} ({reason})"
             for source, targets in sorted(graph.items()) for target, line in sorted(targets.items())
             if (reason := why_wrong(source, target))]
    assert not wrong, "\n".join(wrong)


def test_imports_have_no_cycles():
    trees = parse()
    graph = arrows(trees)
    found = [" -> ".join(f"{m} ({where(trees, m, graph[m][n])})" for m, n in zip(c, c[1:])) + f" -> {c[-1]}"
             for c in cycles(graph)]
    assert not found, "import cycles:\n" + "\n".join(found)


def io_in_flows(root=ROOT):
    """What in flows/ could reach the world: I/O imports (direct or through another flows module),
    file writes, and clock reads. Reading menus and catalogs (`read_text`, `open` to read) is fine."""
    trees = parse(root)
    flows = {m: t for m, t in trees.items() if within(m, "flows")}
    graph = arrows(trees)
    found = []
    for module, (path, tree) in sorted(flows.items()):
        here = f"{path.relative_to(root)}"
        for line, _, top in imports(module, path, tree, trees):
            if top in IO_MODULES:
                found.append(f"{here}:{line}: imports {top}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (problem := io_call(node)):
                found.append(f"{here}:{node.lineno}: {problem}")
        # Through other flows modules: whatever they import, this one drags in too.
        seen, todo = set(), [module]
        while todo:
            for target in graph[todo.pop()]:
                if target not in seen and within(target, "flows"):
                    seen.add(target)
                    todo.append(target)
        for other in sorted(seen - {module}):
            bad = sorted({top for _, _, top in imports(other, *flows[other], trees) if top in IO_MODULES})
            if bad:
                found.append(f"{here}: imports {', '.join(bad)} through {other}")
    return found


def io_call(call):
    """Why `call` writes a file or reads the clock, or None."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    receiver = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
    if name in WRITES and isinstance(func, ast.Attribute):
        return f"writes: .{name}()"
    # Path.replace(target) moves a file; str.replace(old, new) takes two.
    if name == "replace" and isinstance(func, ast.Attribute) and (receiver == "os" or len(call.args) == 1):
        return "writes: .replace()"
    if name == "open":
        modes = [a for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                 and a.value and set(a.value) <= set("rwaxbt+")]
        modes += [k.value for k in call.keywords if k.arg == "mode"]
        for mode in modes:
            if not isinstance(mode, ast.Constant) or set(str(mode.value)) & set("wax+"):
                return f"opens to write: {ast.unparse(call)}"
    if name in CLOCK_READS and isinstance(func, ast.Attribute):
        return f"reads the clock: {ast.unparse(func)}()"
    if receiver == "time":
        return f"reads the clock: time.{name}()"
    return None


def test_imports_flows_does_no_io_beyond_loading():
    found = io_in_flows()
    assert not found, "flows/ must stay pure (the gateway hands it the date and the store):\n" + "\n".join(found)


if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT
    for module, targets in sorted(arrows(parse(root)).items()):
        print(f"{module} -> {', '.join(sorted(targets))}".rstrip())
