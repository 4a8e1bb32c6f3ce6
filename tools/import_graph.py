"""The package's import graph: its cycles (there should be none) and its modules per folder.

    python tools/import_graph.py            # exit 1 if any import cycle
    python tools/import_graph.py --edges    # also every module's imports of the package

Reads the source with `ast` (nothing is imported). Two graphs: import time (module-level
imports, plus the package `__init__` that importing a submodule runs) and all imports
(function-level, lazy ones too). A cycle in the first is an import-time circle; a cycle in
the second means two modules need each other, which a layered package avoids as well.
tests/test_architecture.py runs this on every test run.
"""

from __future__ import annotations

import ast
import collections
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "ferkeras"


def module_files(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules) -> str | None:
    """The package module `name` (or a name inside it) refers to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(module: str, path: pathlib.Path, modules, *, top_level: bool) -> set[str]:
    """Package modules `module` imports (at import time only with `top_level`)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level else list(ast.walk(tree))
    if top_level:  # module level, including inside if/try blocks at that level
        stack, nodes = list(tree.body), []
        while stack:
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)):
                stack.extend(node.body + node.orelse + getattr(node, "finalbody", [])
                             + [n for h in getattr(node, "handlers", []) for n in h.body])
    found = set()
    for node in nodes:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] != PACKAGE:
                continue
            target = _resolve(name, modules)
            if target:
                found.add(target)
                found.update(p for p in _parents(target) if p in modules)
    found.discard(module)
    found -= set(_parents(module))  # a module's own packages run before it, not because of it
    return found


def graph(*, top_level: bool, root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {m: imports_of(m, p, modules, top_level=top_level) for m, p in modules.items()}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def modules_per_folder(root: pathlib.Path = ROOT) -> dict[str, list[str]]:
    folders = collections.defaultdict(list)
    for path in sorted((root / PACKAGE).rglob("*.py")):
        folders[str(path.parent.relative_to(root))].append(path.name)
    return dict(sorted(folders.items()))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    bad = 0
    for label, top in (("import-time", True), ("all imports (lazy too)", False)):
        cycles = find_cycles(graph(top_level=top))
        print(f"{label} cycles: {len(cycles) or 'none'}")
        for cycle in cycles:
            print("  " + " <-> ".join(cycle))
        bad += len(cycles)
    print("\nmodules per folder:")
    for folder, names in modules_per_folder().items():
        print(f"  {folder + '/':28s} {len(names):2d}  {' '.join(n[:-3] for n in names)}")
    if "--edges" in argv:
        print()
        for module, targets in graph(top_level=False).items():
            print(f"{module}: {' '.join(sorted(targets))}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
