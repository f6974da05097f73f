"""pytest plugin: what every test of a gate run did, written to one JSON record.

Loaded with `-p lbfgs_gate.record --gate-record=PATH`. For each collected test the
record (its types and JSON: lbfgs_gate/run_record.py) holds its defect markers and a
structured outcome (`Outcome`):

    reproduced  the call raised DefectObserved (or an exception group of nothing
                else): the defect's own symptom, raised by a detector's check;
    passed      its setup, call and teardown each reported, and passed;
    crashed     any other exception, in any phase (a plain AssertionError too:
                preconditions and helpers are not the symptom); a test whose call
                or teardown never reported (the process running it died, the run was
                interrupted) or whose worker crashed while running it;
    skipped     pytest.skip, a skip marker, or an imperative xfail;
    not run     collected but never reported (deselected with -k or -m, or the
                run stopped early).

An outcome is set only from a report that arrived: nothing is passed by default.
Collection errors are recorded too. pytest's own xfail marking (lbfgs_gate/plugin.py,
`--known-defects`) changes how pytest reports a test, not its outcome here: the
verdict (lbfgs_gate/verdict.py) reads only this record.

Works under pytest-xdist, following its own layout: each worker attaches what it saw
of a test to that test's reports (user_properties) and sends its inventory and JAX
counts through xdist's channel (`workeroutput`); the controller writes the record.
As reports arrive the controller also appends them to PATH.progress, so that a run
killed from outside (the session's time bound) still shows which test was running.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lbfgs_gate.defects import DefectObserved
from lbfgs_gate.run_record import Outcome, Record, dump, finish, take

KEY = "lbfgs_gate"
# --gate-defect-module=FILE=NAME marks every test of a file with a defect: optax's
# own test files do not know the project's markers (the modules the series adds).
OPTION_MODULES = "--gate-defect-module"


def pytest_addoption(parser):
    group = parser.getgroup("lbfgs_gate", "the gate's record of outcomes")
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


_INVENTORY = pytest.StashKey[dict]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The inventory, before any deselection: every test that was collected."""
    by_file = _module_defects(config)
    for item in items:
        for name in by_file.get(item.path.name, []):
            item.add_marker(pytest.mark.defect(name))
    config.stash[_INVENTORY] = {_plain_nodeid(item): defect_names(item) for item in items}


def _kind(excinfo, assertion_is_symptom: bool) -> Outcome:
    if excinfo.errisinstance(DefectObserved):
        return Outcome.REPRODUCED
    # optax's own test files (--gate-defect-module) cannot import DefectObserved: their
    # symptom is an absltest or numpy assertion, an AssertionError.
    if assertion_is_symptom and excinfo.errisinstance(AssertionError):
        return Outcome.REPRODUCED
    if excinfo.errisinstance((pytest.skip.Exception, pytest.xfail.Exception)):
        return Outcome.SKIPPED
    # hypothesis with report_multiple_bugs=True raises a group of the distinct failures:
    # the symptom only if every one of them is.
    if isinstance(excinfo.value, BaseExceptionGroup):
        leaves = list(_leaves(excinfo.value))
        if leaves and all(isinstance(leaf, DefectObserved) for leaf in leaves):
            return Outcome.REPRODUCED
    return Outcome.CRASHED


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
    """Counts the examples hypothesis ran, valid and discarded (assume), per test, and
    which phases ran (a property whose generate phase never ran did not search)."""
    try:
        from hypothesis.statistics import collector
    except ImportError:  # a run without hypothesis
        yield
        return
    previous = collector.value

    def note(stats):
        counts = {"valid": 0, "invalid": 0, "interesting": 0, "generated": 0}
        for key, phase in stats.items():
            if key.endswith("-phase") and isinstance(phase, dict):
                for case in phase.get("test-cases", []):
                    status = "invalid" if case["status"] == "overrun" else case["status"]
                    counts[status] = counts.get(status, 0) + 1
                    if key == "generate-phase":
                        counts["generated"] += 1
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
    entry = {"when": call.when, "defects": defect_names(item), "kind": Outcome.PASSED, "nodeid": _plain_nodeid(item)}
    if call.excinfo is not None:
        entry["kind"] = _kind(call.excinfo, item.path.name in _module_defects(item.config))
        if entry["kind"] == Outcome.REPRODUCED and call.when != "call":
            entry["kind"] = Outcome.CRASHED  # a fixture is not a detector
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
        self.progress = Path(f"{path}.progress")
        self.record = Record()

    def _log(self, entry: dict) -> None:
        with open(self.progress, "a") as progress:
            progress.write(json.dumps(entry) + "\n")

    def pytest_runtest_logreport(self, report):
        entries = [json.loads(value) for key, value in report.user_properties if key == KEY]
        if not entries:
            # No worker saw this report through: pytest-xdist's report for a worker that
            # died while running the test (when "???"). A crash of that test.
            if report.failed:
                entry = {
                    "when": report.when,
                    "kind": Outcome.CRASHED,
                    "nodeid": report.nodeid,
                    "exception": "worker crashed",
                    "message": str(report.longrepr).strip().splitlines()[-1][:300] if report.longrepr else "",
                }
                self.record.crashed_workers.append(report.nodeid)
            else:
                return
        else:
            entry = entries[-1]
        entry["at"] = round(time.time(), 3)
        self._log(entry)
        take(self.record.tests, entry, str(self.progress))

    def pytest_collectreport(self, report):
        if report.failed:
            lines = [line for line in str(report.longrepr).splitlines() if line.strip()]
            self.record.collection_errors.append(
                f"{report.nodeid or '<session>'}: {lines[-1].strip() if lines else '?'}"
            )

    def pytest_collection_modifyitems(self, config, items):
        self.record.inventory.update(config.stash.get(_INVENTORY, {}))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        """A worker's inventory and counts, through xdist's channel (none from a worker that died)."""
        sent = getattr(node, "workeroutput", {}).get(KEY)
        if sent:
            data = json.loads(sent)
            self.record.inventory.update(data["inventory"])
            _add(self.record.compiles, data["compiles"])

    def pytest_sessionfinish(self, session, exitstatus):
        _add(self.record.compiles, _compiles)  # this process's own (no xdist: all of them)
        self.record.exitstatus = int(exitstatus)
        dump(finish(self.record), self.path)


def _add(total: dict, part: dict) -> None:
    for key, value in part.items():
        total[key] = round(total.get(key, 0) + value, 3)


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
    """A worker's inventory and counts, sent to the controller with the worker's last message."""
    config = session.config
    if _record_path(config) is not None and _is_worker(config):
        config.workeroutput[KEY] = json.dumps({"inventory": config.stash.get(_INVENTORY, {}), "compiles": _compiles})


def pytest_configure(config):
    config.addinivalue_line("markers", "defect(name): FAIL_TO_PASS test detecting the named defect")
    path = _record_path(config)
    if path is not None:
        _count_compiles()
    if path is not None and not _is_worker(config):
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{path.name}*"):
            stale.unlink()  # a previous run's record must never pass for this run's
        config.pluginmanager.register(Recorder(path), "lbfgs_gate-recorder")
