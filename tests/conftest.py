"""FAIL_TO_PASS / PASS_TO_PASS bookkeeping, shared by every test of the project.

A test marked `@pytest.mark.defect("NAME")` is FAIL_TO_PASS: it asserts the true
property, so it fails wherever defect NAME is present. Every other test is
PASS_TO_PASS. A detector states its property with `tests.lbfgs.report.check`,
which raises DefectObserved, the defect's own symptom; anything else a detector
raises (a precondition's plain assert included) is a crash.

`--known-defects=NAME,...` declares the defects expected in the optax under test;
tests marked with them become strict expected failures (raises=DefectObserved), so
a plain pytest run is green only if each declared defect is actually reproduced.
A defect that no patch fixes (a limit of the method, registered with `patch=None`
in gatekit/defects.py) is a strict expected failure everywhere. The gate's sessions
do not read pytest's outcome: gatekit/verdict.py judges the record of each test.
"""

import os
from pathlib import Path

import pytest

from gatekit import GateError, defects
from gatekit.defects import DefectObserved

PATCH_STATE_VARIABLE = "LBFGS_GATE_PATCH_STATE"
SUITE_ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser):
    parser.addoption(
        "--known-defects",
        default="",
        metavar="NAME,...",
        help=f"defects expected in the optax under test: {', '.join(sorted(defects.DEFECTS))}",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "defect(name): FAIL_TO_PASS test detecting the named defect")
    try:
        config.known_defects = set(defects.parse_names(config.getoption("--known-defects")))
    except GateError as error:
        raise pytest.UsageError(f"--known-defects: {error}") from None


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not item.path.is_relative_to(SUITE_ROOT):
            continue  # optax's own test files, which the gate runs alongside: their outcome is theirs
        names = [mark.args[0] for mark in item.iter_markers("defect")]
        unknown = [name for name in names if name not in defects.DEFECTS]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid} is marked with unknown defect {unknown[0]!r}")
        # A limit (a defect no patch fixes) is expected everywhere; a patchable
        # defect only where --known-defects declares it.
        limits = {name for name in names if defects.DEFECTS[name].patch is None}
        expected = sorted((set(names) & config.known_defects) | limits)
        if expected:
            # raises=DefectObserved: only the defect's own symptom counts as a reproduction;
            # a crash for another reason (a plain assert too) still fails the run.
            item.add_marker(
                pytest.mark.xfail(
                    reason=f"known defect {', '.join(expected)}",
                    strict=True,
                    raises=DefectObserved,
                )
            )


def patch_state() -> str:
    return os.environ.get(PATCH_STATE_VARIABLE, "not declared (run outside the gate's sessions)")


def pytest_report_header(config):
    try:
        from importlib.metadata import version

        optax_version = version("optax")
    except Exception:  # noqa: BLE001 - the header must never break a run
        optax_version = "not installed"
    known = ", ".join(sorted(config.known_defects)) or "none"
    return [f"optax {optax_version}; patch state: {patch_state()}; known defects: {known}"]
