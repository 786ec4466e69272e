#!/usr/bin/env python3
"""Print the code-shape figures quoted in redesign notes, as JSON (standard library only).

Figures, for the operator package (`lms_operator`) and for every Python file of the repository:
the number of modules, the largest module and the longest function (lines, with where), the
import cycles between modules of the project's own packages (every import counts, lazy ones
inside functions too, since they still tie the modules together), and the upward imports: a
module importing a floor above its own in the layering below (the same order the import-linter
contracts in pyproject.toml check). Usage: tools/code_metrics.py [REPO_ROOT]
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

SKIP_DIRS = {".venv", ".git", "build", "dist", ".sandbox", "node_modules", "__pycache__"}
PACKAGE_ROOTS = ("operator", "harness")  # folders holding the project's importable packages

# Floors of lms_operator, highest first (the same as the import-linter contracts in
# pyproject.toml). Compression and serving (the Job's code and `lms serve`) stand beside the
# operator: only the CLI starts them, and they never import the operator's own floors.
FLOORS = (("cli",), ("handlers",), ("runtime",), ("reconcile",), ("resources",), ("storage",),
          ("k8s", "modelrepo"), ("api",))
JOB_CODE = ("serving", "compression")  # serving above compression
OPERATOR_ONLY = {"cli", "handlers", "runtime", "reconcile", "resources", "k8s"}


def python_files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(p in SKIP_DIRS or p.endswith(".egg-info") for p in parts):
            continue
        found.append(path)
    return sorted(found)


def module_name(path: Path, root: Path) -> str | None:
    """Dotted name of a file under one of PACKAGE_ROOTS, else None."""
    rel = path.relative_to(root)
    if rel.parts[0] not in PACKAGE_ROOTS or len(rel.parts) < 2:
        return None
    parts = list(rel.with_suffix("").parts[1:])
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def function_lengths(tree: ast.AST) -> list[tuple[int, str]]:
    """(lines, "name:first line") of every function and method, nested ones included."""
    return [(node.end_lineno - node.lineno + 1, f"{node.name}:{node.lineno}") for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno]


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules this module imports (resolved to the deepest known module)."""
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def floor_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "lms_operator" or len(parts) < 2:
        return None
    return parts[1]


def is_upward(source: str, target: str) -> bool:
    """True when `source` imports a floor above its own, the Job's code imports the operator,
    or the operator imports the Job's code."""
    a, b = floor_of(source), floor_of(target)
    if a is None or b is None or a == b:
        return False
    if a in JOB_CODE:
        return b in OPERATOR_ONLY or (b in JOB_CODE and JOB_CODE.index(b) < JOB_CODE.index(a))
    if b in JOB_CODE:
        return a not in ("cli", "storage")
    rank = {pkg: i for i, floor in enumerate(FLOORS) for pkg in floor}
    if a not in rank or b not in rank:
        return False
    return rank[b] < rank[a]


def measure(root: Path) -> dict[str, object]:
    files = python_files(root)
    sizes: dict[str, int] = {}
    functions: dict[str, list[tuple[int, str]]] = {}
    trees: dict[str, tuple[ast.AST, str, bool]] = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(root))
        sizes[rel] = len(text.splitlines())
        tree = ast.parse(text, filename=rel)
        functions[rel] = function_lengths(tree)
        name = module_name(path, root)
        if name:
            trees[name] = (tree, rel, path.name == "__init__.py")
    known = set(trees)
    graph = {name: imported(tree, name, is_pkg, known) for name, (tree, _, is_pkg) in trees.items()}
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if is_upward(a, b))

    def summary(selected: list[str]) -> dict[str, object]:
        largest = max(selected, key=lambda r: sizes[r])
        lines, name, path = max((f + (r,) for r in selected for f in functions[r]), default=(0, "", ""))
        return {
            "modules": len(selected),
            "lines": sum(sizes[r] for r in selected),
            "largest_module": {"path": largest, "lines": sizes[largest]},
            "longest_function": {"path": path, "function": name, "lines": lines},
            "functions_over_60_lines": sum(1 for r in selected for f in functions[r] if f[0] > 60),
        }

    product = [rel for name, (_, rel, _) in trees.items() if name.split(".")[0] == "lms_operator"]
    found_cycles = cycles(graph)
    return {
        "lms_operator": summary(sorted(product)),
        "repository": summary(sorted(sizes)),
        "import_cycles": len(found_cycles),
        "import_cycle_members": found_cycles,
        "upward_imports": len(upward),
        "upward_import_list": upward,
    }


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    print(json.dumps(measure(root), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
