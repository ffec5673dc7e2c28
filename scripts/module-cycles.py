#!/usr/bin/env python3
"""Import cycles among a crate's modules.

Reads the DOT graph of `cargo modules dependencies` on stdin, folds every item into the module
that declares it, keeps the "uses" edges between two different modules (the crate root, which
only re-exports, left out), and prints each module's imports and any cycle among them. Exits 1 if
there is a cycle.

    cargo install cargo-modules --version 0.27.0 --locked
    cargo modules dependencies -p petition-engine --lib --no-externs --no-sysroot \\
        | python3 scripts/module-cycles.py

(`--acyclic` of cargo-modules itself checks items, not modules, and stops at the first type whose
constructor returns it.)
"""

import re
import sys


def main() -> int:
    dot = sys.stdin.read()
    labels = dict(re.findall(r'^\s*"([^"]+)" \[label="([^"]*)"', dot, re.M))
    modules = {path for path, label in labels.items() if "mod|" in label or label.startswith("crate|")}
    if not modules:
        print("no modules in the input: is it the output of `cargo modules dependencies`?")
        return 2
    root = min(modules, key=len)

    def module_of(path: str):
        parts = path.split("::")
        for end in range(len(parts), 0, -1):
            prefix = "::".join(parts[:end])
            if prefix in modules:
                return prefix
        return None

    graph: dict[str, set[str]] = {}
    for user, used in re.findall(r'"([^"]+)" -> "([^"]+)" \[label="uses"', dot):
        a, b = module_of(user), module_of(used)
        if a and b and a != b and root not in (a, b):
            graph.setdefault(a, set()).add(b)

    cycles = strongly_connected(graph)
    edges = sum(len(targets) for targets in graph.values())
    print(f"modules: {len(modules) - 1}, imports between modules: {edges}")
    for module in sorted(graph):
        print(f"  {module} -> {', '.join(sorted(graph[module]))}")
    for cycle in cycles:
        print("CYCLE among:", " ".join(cycle))
    if cycles:
        return 1
    print("no import cycle among the crate's modules")
    return 0


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(set(graph) | {w for targets in graph.values() for w in targets}):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":
    sys.exit(main())
