"""The suite's committed inventory: every test of lbfgs_gate/suite, by node id, with its defect markers.

A gate run that collects anything else is red (lbfgs_gate/verdict.py): a test ignored,
deselected by a conftest, renamed out of collection or added without review cannot
pass unnoticed. `nox -s inventory` (`python -m lbfgs_gate inventory --write`) collects
the suite and writes lbfgs_gate/suite/inventory.json; `--check` (in `nox -s lint`, which has
no jax) compares it with the test functions the suite's files define.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from lbfgs_gate import PROJECT_ROOT, SUITE_DIR, GateError, defects

INVENTORY = SUITE_DIR / "inventory.json"


def expected(excluded_files: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The committed inventory, without the tests of `excluded_files` (node id prefixes)."""
    if not INVENTORY.is_file():
        raise GateError(f"{INVENTORY.relative_to(PROJECT_ROOT)} is missing: run `nox -s inventory` and commit it")
    tests = json.loads(INVENTORY.read_text())["tests"]
    return {k: v for k, v in tests.items() if not k.startswith(tuple(f"{f}::" for f in excluded_files))}


def write(collected: dict[str, list[str]]) -> Path:
    suite = {k: sorted(v) for k, v in sorted(collected.items()) if k.startswith("lbfgs_gate/suite/")}
    if not suite:
        raise GateError("the suite collected no test: see the log of the collection")
    document = {
        "about": "every test of lbfgs_gate/suite and its defect markers; regenerate with `nox -s inventory`",
        "tests": suite,
    }
    INVENTORY.write_text(json.dumps(document, indent=1) + "\n")
    return INVENTORY


def _functions(path: Path) -> set[str]:
    """Test functions a module defines (top level, or methods of Test* classes)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            names |= {
                f"{node.name}::{f.name}"
                for f in node.body
                if isinstance(f, ast.FunctionDef) and f.name.startswith("test")
            }
    return names


def check() -> list[str]:
    """Where the committed inventory and the suite's files disagree (no collection, no jax)."""
    problems = []
    tests = expected()
    listed: dict[str, set[str]] = {}
    for nodeid, names in tests.items():
        file, _, rest = nodeid.partition("::")
        listed.setdefault(file, set()).add(rest.split("[", 1)[0])
        for name in names:
            if name not in defects.DEFECTS:
                problems.append(f"{nodeid} is marked with unknown defect {name!r}")
    for path in sorted(SUITE_DIR.glob("test_*.py")):
        file = str(path.relative_to(PROJECT_ROOT))
        defined, inventoried = _functions(path), listed.pop(file, set())
        for name in sorted(defined - inventoried):
            problems.append(f"{file}::{name} is not in the inventory")
        for name in sorted(inventoried - defined):
            problems.append(f"{file}::{name} is in the inventory but not defined")
    for file in sorted(listed):
        problems.append(f"{file} is in the inventory but does not exist")
    return problems
