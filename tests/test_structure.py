"""The package's shape: no import circles (lazy imports inside functions count too: they hide a
circle, they do not remove it), lower layers never import higher ones, and no function grows
past what one reads in one go."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "ctcasr"
MAX_FUNCTION_LINES = 80
# what each part may not import (the pipeline reads downwards: data -> models -> train /
# decode -> infer -> serve -> cli)
FORBIDDEN = {
    "ctcasr.data": ("ctcasr.train", "ctcasr.infer", "ctcasr.serve", "ctcasr.cli",
                    "ctcasr.decode", "ctcasr.checkpoint"),
    "ctcasr.models": ("ctcasr.train", "ctcasr.infer", "ctcasr.serve", "ctcasr.cli",
                      "ctcasr.decode", "ctcasr.data", "ctcasr.checkpoint"),
    "ctcasr.config": ("ctcasr.models", "ctcasr.train", "ctcasr.infer", "ctcasr.decode",
                      "ctcasr.data"),
    "ctcasr.decode": ("ctcasr.train", "ctcasr.infer", "ctcasr.serve", "ctcasr.cli"),
    "ctcasr.train": ("ctcasr.infer", "ctcasr.serve", "ctcasr.cli"),
    "ctcasr.infer": ("ctcasr.train", "ctcasr.serve", "ctcasr.cli"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it (type-checking-only
    imports left out: they do not run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    me = module_name(path)
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative
                parts = me.split(".")
                pkg = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                base = ".".join([*pkg, node.module])
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n and n != me:
                out.add(n)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    # a package's __init__ importing its own modules is not a circle of the code
    g = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph().items()}
    assert cycles(g) == []


def test_lower_layers_do_not_import_higher_ones():
    wrong = [f"{m} imports {d}" for m, deps in graph().items()
             for part, banned in FORBIDDEN.items() if m == part or m.startswith(part + ".")
             for d in deps if any(d == b or d.startswith(b + ".") for b in banned)]
    assert wrong == []


def test_the_checks_see_circles_and_lazy_imports(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    f = tmp_path / "ctcasr" / "x.py"
    f.parent.mkdir()
    f.write_text("import typing\nif typing.TYPE_CHECKING:\n    import ctcasr.y\n"
                 "def g():\n    from ctcasr.z import w\n")
    import conftest

    old, conftest.REPO = conftest.REPO, tmp_path
    globals()["REPO"] = tmp_path
    try:
        assert imports(f, {"ctcasr.x", "ctcasr.y", "ctcasr.z"}) == {"ctcasr.z"}
    finally:
        conftest.REPO = old
        globals()["REPO"] = old


def test_no_function_is_longer_than_one_reads_in_one_go():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {n} lines")
    assert long == []
