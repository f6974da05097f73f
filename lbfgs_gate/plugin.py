"""The gate's pytest plugin: FAIL_TO_PASS / PASS_TO_PASS bookkeeping for the suite.

The gate's runs load it by name (`-p lbfgs_gate.plugin`); installed, it is also the
`pytest11` entry point, inert unless asked: `pytest --lbfgs-gate` adds the suite's
detectors (`lbfgs_gate/suite`) to a project's own test run, for the optax installed there
(`--known-defects` as below; `lbfgs-gate check` is the judged way).

A test marked `@pytest.mark.defect("NAME")` is FAIL_TO_PASS: it asserts the true
property, so it fails wherever defect NAME is present. Every other test is
PASS_TO_PASS. A detector states its property with `lbfgs_gate.suite.report.check`,
which raises DefectObserved, the defect's own symptom; anything else a detector
raises (a precondition's plain assert included) is a crash.

`--known-defects=NAME,...` declares the defects expected in the optax under test;
tests marked with them become strict expected failures (raises=DefectObserved), so
a plain pytest run is green only if each declared defect is actually reproduced.
A defect that no patch fixes (a limit of the method, registered with `patch=None`
in lbfgs_gate/defects.py) is a strict expected failure everywhere. The gate's sessions
do not read pytest's outcome: lbfgs_gate/verdict.py judges the record of each test.
"""

import os
from pathlib import Path

import pytest

from lbfgs_gate import GateError, defects
from lbfgs_gate.defects import DefectObserved

PATCH_STATE_VARIABLE = "LBFGS_GATE_PATCH_STATE"
SUITE_ROOT = Path(__file__).resolve().parent / "suite"


def pytest_addoption(parser):
    parser.addoption(
        "--lbfgs-gate",
        action="store_true",
        help="also collect lbfgs-gate's detectors: is the optax here safe to differentiate through L-BFGS?",
    )
    parser.addoption(
        "--known-defects",
        default="",
        metavar="NAME,...",
        help=f"defects expected in the optax under test: {', '.join(sorted(defects.DEFECTS))}",
    )


def pytest_configure(config):
    if config.getoption("--lbfgs-gate") and str(SUITE_ROOT) not in config.args:
        config.args.append(str(SUITE_ROOT))
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
