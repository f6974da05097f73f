"""pytest plugin: what every test of a gate run did, written to one JSON record.

Loaded with `-p gatekit.record --gate-record=PATH`. For each collected test the
record holds its defect markers and a structured outcome:

    reproduced  the call raised DefectObserved (or an exception group of nothing
                else): the defect's own symptom, raised by a detector's check;
    passed      every phase passed;
    crashed     any other exception, in any phase (a plain AssertionError too:
                preconditions and helpers are not the symptom);
    skipped     pytest.skip, a skip marker, or an imperative xfail;
    not run     collected but never reported (deselected with -k or -m, or the
                run stopped early).

Collection errors are recorded too. pytest's own xfail marking (tests/conftest.py,
`--known-defects`) changes how pytest reports a test, not its outcome here: the
verdict (gatekit/verdict.py) reads only this record.

Works under pytest-xdist: the workers collect and run the tests and attach what
they saw to each report (user_properties), which the controller receives and
writes; each process that collects writes its inventory beside the record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gatekit.defects import DefectObserved

KEY = "gatekit"
# --gate-defect-module=FILE=NAME marks every test of a file with a defect: optax's
# own test files do not know the project's markers (the modules the series adds).
OPTION_MODULES = "--gate-defect-module"


def pytest_addoption(parser):
    group = parser.getgroup("gatekit", "the gate's record of outcomes")
    group.addoption("--gate-record", metavar="PATH", help="write each test's outcome to this JSON file")
    group.addoption(
        OPTION_MODULES,
        action="append",
        default=[],
        metavar="FILE=DEFECT",
        help="mark every test of a test file with a defect (repeatable)",
    )


def _record_path(config) -> Path | None:
    path = config.getoption("--gate-record")
    return Path(path) if path else None


def _module_defects(config) -> dict[str, list[str]]:
    marks: dict[str, list[str]] = {}
    for entry in config.getoption(OPTION_MODULES):
        file, _, name = entry.partition("=")
        marks.setdefault(file, []).append(name)
    return marks


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def defect_names(item) -> list[str]:
    return [mark.args[0] for mark in item.iter_markers("defect")]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The inventory, before any deselection: every test that was collected."""
    by_file = _module_defects(config)
    for item in items:
        for name in by_file.get(item.path.name, []):
            item.add_marker(pytest.mark.defect(name))
    path = _record_path(config)
    if path is None:
        return
    inventory = {item.nodeid: defect_names(item) for item in items}
    suffix = config.workerinput["workerid"] if _is_worker(config) else "main"
    path.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{path}.inventory-{suffix}").write_text(json.dumps(inventory))


def _kind(excinfo, assertion_is_symptom: bool) -> str:
    if excinfo.errisinstance(DefectObserved):
        return "reproduced"
    # optax's own test files (--gate-defect-module) cannot import DefectObserved: their
    # symptom is an absltest or numpy assertion, an AssertionError.
    if assertion_is_symptom and excinfo.errisinstance(AssertionError):
        return "reproduced"
    if excinfo.errisinstance((pytest.skip.Exception, pytest.xfail.Exception)):
        return "skipped"
    # hypothesis with report_multiple_bugs=True raises a group of the distinct failures:
    # the symptom only if every one of them is.
    if isinstance(excinfo.value, BaseExceptionGroup):
        leaves = list(_leaves(excinfo.value))
        if leaves and all(isinstance(leaf, DefectObserved) for leaf in leaves):
            return "reproduced"
    return "crashed"


def _leaves(group):
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            yield from _leaves(inner)
        else:
            yield inner


def _hypothesis_settings(item) -> dict | None:
    """The settings a @given test ran with (None for other tests)."""
    settings = getattr(getattr(item, "obj", None), "_hypothesis_internal_use_settings", None)
    if settings is None:
        return None
    from hypothesis import settings as Settings

    return {
        "profile": Settings.get_current_profile_name(),
        "max_examples": settings.max_examples,
        "derandomize": settings.derandomize,
        "report_multiple_bugs": settings.report_multiple_bugs,
        "phases": sorted(phase.name for phase in settings.phases),
    }


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item):
    """Counts the examples hypothesis ran, valid and discarded (assume), per test."""
    try:
        from hypothesis.statistics import collector
    except ImportError:  # a run without hypothesis
        yield
        return
    previous = collector.value

    def note(stats):
        counts = {"valid": 0, "invalid": 0, "interesting": 0}
        for key, phase in stats.items():
            if key.endswith("-phase") and isinstance(phase, dict):
                for case in phase.get("test-cases", []):
                    status = "invalid" if case["status"] == "overrun" else case["status"]
                    counts[status] = counts.get(status, 0) + 1
        item.stash[_EXAMPLES] = counts
        if previous is not None:
            previous(stats)

    with collector.with_value(note):
        yield


_EXAMPLES = pytest.StashKey[dict]()


def _plain_nodeid(item) -> str:
    """The node id as collected: pytest-xdist's --dist loadgroup appends "@GROUP" to it."""
    mark = item.get_closest_marker("xdist_group")
    group = (mark.args[0] if mark.args else mark.kwargs.get("name")) if mark else None
    suffix = f"@{group}" if group else ""
    return item.nodeid[: -len(suffix)] if suffix and item.nodeid.endswith(suffix) else item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    entry = {"when": call.when, "defects": defect_names(item), "kind": "passed", "nodeid": _plain_nodeid(item)}
    if call.excinfo is not None:
        entry["kind"] = _kind(call.excinfo, item.path.name in _module_defects(item.config))
        if entry["kind"] == "reproduced" and call.when != "call":
            entry["kind"] = "crashed"  # a fixture is not a detector
        entry["exception"] = call.excinfo.typename
        message = str(call.excinfo.value).strip()
        entry["message"] = message.splitlines()[0][:300] if message else ""
        entry["report"] = message[:8000]
    if call.when == "call":
        entry["hypothesis"] = _hypothesis_settings(item)
        entry["examples"] = item.stash.get(_EXAMPLES, None)
    report.user_properties.append((KEY, json.dumps(entry)))


class Recorder:
    """Lives in the process that reports (the xdist controller, or the only one)."""

    def __init__(self, path: Path):
        self.path = path
        self.tests: dict[str, dict] = {}
        self.collection_errors: list[str] = []

    def pytest_runtest_logreport(self, report):
        entries = [json.loads(value) for key, value in report.user_properties if key == KEY]
        if not entries:
            return
        entry = entries[-1]
        test = self.tests.setdefault(
            entry.get("nodeid", report.nodeid), {"defects": entry["defects"], "outcome": "passed"}
        )
        if entry.get("hypothesis") is not None:
            test["hypothesis"] = entry["hypothesis"]
        if entry.get("examples") is not None:
            test["examples"] = entry["examples"]
        # The first phase that did not pass decides the outcome.
        if test["outcome"] == "passed" and entry["kind"] != "passed":
            test["outcome"] = entry["kind"]
            test.update(
                phase=entry["when"],
                exception=entry.get("exception", ""),
                message=entry.get("message", ""),
                report=entry.get("report", ""),
            )

    def pytest_collectreport(self, report):
        if report.failed:
            lines = [line for line in str(report.longrepr).splitlines() if line.strip()]
            self.collection_errors.append(f"{report.nodeid or '<session>'}: {lines[-1].strip() if lines else '?'}")

    def pytest_sessionfinish(self, session, exitstatus):
        inventory: dict[str, list[str]] = {}
        for part in sorted(self.path.parent.glob(f"{self.path.name}.inventory-*")):
            inventory.update(json.loads(part.read_text()))
            part.unlink()
        compiles: dict[str, float] = dict(_compiles)  # this process's own (no xdist: all of them)
        for part in sorted(self.path.parent.glob(f"{self.path.name}.compiles-*")):
            for key, value in json.loads(part.read_text()).items():
                compiles[key] = round(compiles.get(key, 0) + value, 3)
            part.unlink()
        record = {
            "exitstatus": int(exitstatus),
            "compiles": compiles,
            "inventory": inventory,
            "tests": self.tests,
            "collection_errors": self.collection_errors,
            "workers": os.environ.get("PYTEST_XDIST_WORKER_COUNT", "") or None,
        }
        self.path.write_text(json.dumps(record, indent=1) + "\n")


# What JAX compiled in this process (jax.monitoring's events): the cost that speed work counts.
_JAX_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "traces",
    "/jax/core/compile/backend_compile_duration": "backend_compiles",
    "/jax/compilation_cache/compile_requests_use_cache": "compile_requests",
    "/jax/compilation_cache/cache_hits": "persistent_cache_hits",
    "/jax/compilation_cache/cache_misses": "persistent_cache_misses",
}
_compiles: dict[str, float] = {}


def _count_compiles() -> None:
    try:
        from jax import monitoring
    except ImportError:  # a run without jax
        return

    def on_event(event, *args, **kwargs):
        if event in _JAX_EVENTS:
            _compiles[_JAX_EVENTS[event]] = _compiles.get(_JAX_EVENTS[event], 0) + 1

    def on_duration(event, duration, *args, **kwargs):
        if event in _JAX_EVENTS:
            on_event(event)
            key = f"{_JAX_EVENTS[event]}_seconds"
            _compiles[key] = round(_compiles.get(key, 0.0) + float(duration), 3)

    monitoring.register_event_listener(on_event)
    monitoring.register_event_duration_secs_listener(on_duration)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    """A worker's counts, written before it tells the controller it has finished."""
    path = _record_path(session.config)
    if path is not None and _is_worker(session.config):
        Path(f"{path}.compiles-{session.config.workerinput['workerid']}").write_text(json.dumps(_compiles))


def pytest_configure(config):
    config.addinivalue_line("markers", "defect(name): FAIL_TO_PASS test detecting the named defect")
    path = _record_path(config)
    if path is not None:
        _count_compiles()
    if path is not None and not _is_worker(config):
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{path.name}*"):
            stale.unlink()  # a previous run's record must never pass for this run's
        config.pluginmanager.register(Recorder(path), "gatekit-recorder")
