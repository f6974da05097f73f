"""The record of one gate run: what each test did, as lbfgs_gate/record.py writes it.

Its types, how the reports of a test's phases make them, and the only code that turns them
into JSON and back (`dump`, `load`). No pytest here: the processes that judge records
(lbfgs_gate/verdict.py; the fork gate's own environment has no pytest) import this module,
not the plugin.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lbfgs_gate import GateError

PHASES = ("setup", "call", "teardown")


class Outcome(enum.StrEnum):
    """What a test did (lbfgs_gate/record.py says when each one is set)."""

    REPRODUCED = "reproduced"
    PASSED = "passed"
    CRASHED = "crashed"
    SKIPPED = "skipped"
    NOT_RUN = "not run"


@dataclass
class HypothesisSettings:
    """The settings a @given test ran with."""

    profile: str
    max_examples: int
    derandomize: bool
    report_multiple_bugs: bool
    phases: list[str]


@dataclass
class TestRecord:
    """One test: its defect markers and what it did."""

    nodeid: str
    defects: list[str] = field(default_factory=list)
    # None until `finish` decides it: the first phase that did not pass, or all passed.
    outcome: Outcome | None = None
    # What each phase that reported did.
    phases: dict[str, Outcome] = field(default_factory=dict)
    # For an outcome other than passed: the phase that decided it and what it raised
    # (the exception's type, the first line of its message, and the message).
    phase: str = ""
    exception: str = ""
    message: str = ""
    report: str = ""
    hypothesis: HypothesisSettings | None = None
    # Examples hypothesis ran, by status ("valid", "invalid", ...), and how many it generated.
    examples: dict[str, int] | None = None


@dataclass
class Record:
    """A run: every test it collected, what each did, and what the run as a whole said."""

    # Node id -> defect markers of every test collected, before any deselection.
    inventory: dict[str, list[str]] = field(default_factory=dict)
    tests: dict[str, TestRecord] = field(default_factory=dict)
    collection_errors: list[str] = field(default_factory=list)
    # Node ids of the tests whose pytest-xdist worker died while running them.
    crashed_workers: list[str] = field(default_factory=list)
    # What JAX compiled, counts and seconds (lbfgs_gate/record.py).
    compiles: dict[str, float] = field(default_factory=dict)
    # pytest's exit status: the plugin writes its own, the runner sets its process's; None unknown.
    exitstatus: int | None = None
    # For a run killed at its time bound: the bound in seconds, and the tests it was running.
    timed_out: float | None = None
    running: list[str] = field(default_factory=list)


def take(tests: dict[str, TestRecord], entry: dict, where: str) -> None:
    """One phase's report (the plugin's JSON entry, as a worker sent it) into `tests`."""
    nodeid = entry["nodeid"]
    test = tests.setdefault(nodeid, TestRecord(nodeid, entry.get("defects", [])))
    kind = _outcome(entry["kind"], f"{where}: {nodeid}")
    test.phases[entry["when"]] = kind
    if entry.get("hypothesis") is not None:
        test.hypothesis = HypothesisSettings(**entry["hypothesis"])
    if entry.get("examples") is not None:
        test.examples = entry["examples"]
    # The first phase that did not pass decides the outcome.
    if test.outcome is None and kind != Outcome.PASSED:
        test.outcome, test.phase = kind, entry["when"]
        test.exception = entry.get("exception", "")
        test.message = entry.get("message", "")
        test.report = entry.get("report", "")


def finish(record: Record) -> Record:
    """Outcomes from the evidence: a test is passed only when its setup, call and teardown
    all reported and passed; one whose reports stopped arriving crashed; xdist's report
    of a crashed worker (node id with "@GROUP") is matched to the test as collected."""
    tests, inventory = record.tests, record.inventory
    for nodeid in list(tests):
        plain = nodeid.rsplit("@", 1)[0]
        if nodeid not in inventory and plain in inventory:
            test = tests.pop(nodeid)
            if plain in tests:
                kept = tests[plain]
                kept.phases.update(test.phases)
                if test.outcome and kept.outcome in (None, Outcome.PASSED):
                    kept.outcome, kept.phase = test.outcome, test.phase
                    kept.exception, kept.message, kept.report = test.exception, test.message, test.report
            else:
                test.nodeid = plain
                tests[plain] = test
    for nodeid, test in tests.items():
        if not test.defects and nodeid in inventory:
            test.defects = inventory[nodeid]
        if test.outcome:
            continue
        missing = [phase for phase in PHASES if phase not in test.phases]
        if missing:
            test.outcome, test.phase, test.exception = Outcome.CRASHED, missing[0], "no report"
            test.message = f"its {missing[0]} never reported: the process running it died or the run was interrupted"
        else:
            test.outcome = Outcome.PASSED
    return record


def load_progress(path: Path) -> Record:
    """The record of a run killed from outside, rebuilt from what its controller logged."""
    record = Record()
    progress = Path(f"{path}.progress")
    if progress.is_file():
        for line in progress.read_text().splitlines():
            if line.strip():
                take(record.tests, json.loads(line), str(progress))
    record.running = [n for n, t in record.tests.items() if "teardown" not in t.phases and t.outcome is None]
    return finish(record)


def dump(record: Record, path: Path) -> None:
    """Writes `record` to `path` as JSON: its tests keyed by node id, each outcome as its text."""
    document = asdict(record)
    for test in document["tests"].values():
        del test["nodeid"]  # its key
    Path(path).write_text(json.dumps(document, indent=1) + "\n")


def load(path: Path) -> Record:
    """The record `dump` wrote to `path`; an outcome it does not know is an error, not a guess."""
    document = json.loads(Path(path).read_text())
    tests = {}
    for nodeid, entry in document.pop("tests").items():
        where = f"{path}: {nodeid}"
        typed = {
            "outcome": _outcome(entry["outcome"], where),
            "phases": {when: _outcome(kind, where) for when, kind in entry["phases"].items()},
            "hypothesis": HypothesisSettings(**entry["hypothesis"]) if entry["hypothesis"] else None,
        }
        tests[nodeid] = TestRecord(nodeid, **{**entry, **typed})
    return Record(**document, tests=tests)


def _outcome(name: str, where: str) -> Outcome:
    try:
        return Outcome(name)
    except ValueError:
        known = ", ".join(repr(str(outcome)) for outcome in Outcome)
        raise GateError(f"{where}: unknown outcome {name!r} (one of {known}): not a record this gate wrote") from None
