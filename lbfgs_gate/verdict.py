"""The gate's verdict: records of what each test did (lbfgs_gate/run_record.py) in, one decision out.

Every session that judges (unpatched, patched, upstream, matrix, fork, check, the hunk proof) calls
`judge`; optax's whole suite, compared as published and with the series, `optax_suite_differences`;
nothing else decides. The rules:

- A detector (a test marked with defects) of a defect expected present (every defect
  the series fixes, in `unpatched`; every limit, everywhere) must be *reproduced*:
  raise DefectObserved. One that passes no longer detects its defect.
- A detector whose defects are all expected absent (`patched`, `upstream`, `fork`)
  must pass; a reproduction means the defect is present.
- A defect the fork maintainer accepts (`--accept`) may be reproduced or not.
- Every other test (PASS_TO_PASS) must pass.
- A detector marked with several defects may go either way only when every one of
  them is accepted: accepting one defect never silences another.
- Whatever the expectation, a test that crashed (its worker died, or its call or
  teardown never reported), was skipped or was not run, a collection error, an empty
  run, a pytest exit status other than 0 or 1 (interrupted, internal or usage error),
  a run that hit its time bound, a collected suite that differs from the committed
  inventory (lbfgs_gate/suite/inventory.json: a test missing, extra, or with other
  markers), a defect expected without any detector, and a hypothesis test that did
  not run under the required profile are red: the gate cannot have detected what it
  did not run.
- A property that passed must have searched: its generate phase ran, it found at
  least MIN_EXAMPLES valid examples, and assume() discarded at most
  MAX_DISCARDED of the examples it ran.
- `measure` (the matrix on a release as published) expects nothing: each defect's
  state is measured, and a defect that could not be measured is red.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lbfgs_gate import defects as registry
from lbfgs_gate.run_record import HypothesisSettings, Outcome, Record, TestRecord, load, load_progress

PROFILE = "ci"
MIN_EXAMPLES = 200
# Measured on the suite (ci profile): at most 19 of 219 examples (9 %) discarded by any
# property; more than a quarter means its assume() filters instead of its strategy building.
MAX_DISCARDED = 0.25
# What each source of tests is called in reports.
SOURCES = {"suite": "suite", "optax": "optax-side"}


@dataclass(frozen=True)
class Expectation:
    """What a session expects of the optax it runs against."""

    # Defects the series fixes that must be reproduced (limits always must).
    present: frozenset[str] = frozenset()
    # Defects a fork maintainer accepts: present or not, with the reason shown.
    accepted: dict[str, str] = field(default_factory=dict)
    # True for the matrix on a release as published: measure, expect nothing.
    measure: bool = False
    # Only the detectors ran (pytest -m defect): PASS_TO_PASS tests are not expected.
    detectors_only: bool = False
    profile: str | None = PROFILE
    # The suite's committed inventory (node id -> defect markers) the run must have
    # collected, exactly; None where a session does not check it (the gate's own tests).
    inventory: dict[str, list[str]] | None = None
    # The defects this run judges, when not all (tools/hunk_proof.py judges one patch's
    # defect on a prefix of the series): the others are "not judged", whatever their tests do.
    only: frozenset[str] | None = None

    def wants(self, names: list[str]) -> str:
        """What a detector marked with `names` must do: reproduced, passed or either."""
        if self.measure:
            return "either"
        if self.only is not None:
            names = [name for name in names if name in self.only]
            if not names:
                return "either"
        if any(name in self.present or registry.DEFECTS[name].patch is None for name in names):
            return "reproduced"
        if all(name in self.accepted for name in names):
            return "either"
        return "passed"

    def of(self, name: str) -> str:
        if self.only is not None and name not in self.only:
            return "not judged"
        if registry.DEFECTS[name].patch is None:
            return "limit (present)"
        if self.measure:
            return "measured"
        if name in self.accepted:
            return "accepted"
        return "present" if name in self.present else "absent"


@dataclass
class Row:
    expected: str
    detectors: int = 0
    reproduced: int = 0
    passed: int = 0
    crashed: int = 0
    skipped: int = 0
    not_run: int = 0
    optax_tests: int = 0
    optax_reproduced: int = 0
    optax_passed: int = 0
    outcome: str = ""


@dataclass
class Verdict:
    session: str
    verdict: str  # "green" or "red"
    profile: str
    reasons: list[str]
    defects: dict[str, Row]
    accepted: dict[str, str]
    tests: dict[str, int]
    examples: dict[str, dict]

    @property
    def green(self) -> bool:
        return self.verdict == "green"

    def to_json(self) -> dict:
        document = asdict(self)
        document["defects"] = {name: asdict(row) for name, row in self.defects.items()}
        return document


def _count(row: Row, outcome: Outcome, source: str) -> None:
    if source == "optax":
        row.optax_tests += 1
        if outcome == Outcome.REPRODUCED:
            row.optax_reproduced += 1
        elif outcome == Outcome.PASSED:
            row.optax_passed += 1
        else:
            # Crashes of optax-side tests are counted with the suite's: one column each.
            setattr(row, outcome.replace(" ", "_"), getattr(row, outcome.replace(" ", "_")) + 1)
        return
    row.detectors += 1
    setattr(row, outcome.replace(" ", "_"), getattr(row, outcome.replace(" ", "_")) + 1)


def _describe(test: TestRecord) -> str:
    detail = ": ".join(part for part in (test.exception, test.message) if part)
    return f"{test.nodeid} {test.outcome}" + (f" in {test.phase} ({detail})" if test.phase else "")


def judge(session: str, records: dict[str, Record], expectation: Expectation) -> Verdict:
    """The verdict of one session from its records ({"suite": record, "optax": record})."""
    reasons: list[str] = []
    rows = {name: Row(expectation.of(name)) for name in registry.DEFECTS}
    counts = {"total": 0, "passed": 0, "reproduced": 0, "crashed": 0, "skipped": 0, "not run": 0}
    examples: dict[str, dict] = {}
    profiles: set[str] = set()
    for source, record in records.items():
        inventory, tests = record.inventory, record.tests
        label = SOURCES.get(source, source)
        reasons += _run_reasons(label, record)
        if not inventory:
            reasons.append(f"{label}: no test was collected")
        elif source == "suite" and expectation.inventory is not None:
            reasons += _inventory_reasons(inventory, expectation)
        for error in record.collection_errors:
            reasons.append(f"{label}: collection error: {error}")
        for nodeid in sorted(set(inventory) | set(tests)):
            test = tests.get(nodeid) or TestRecord(nodeid, outcome=Outcome.NOT_RUN)
            names = inventory.get(nodeid, test.defects)
            unknown = [name for name in names if name not in registry.DEFECTS]
            if unknown:
                reasons.append(f"{nodeid} is marked with unknown defect {unknown[0]!r}")
                continue
            outcome = test.outcome
            if not names and expectation.detectors_only and outcome == Outcome.NOT_RUN:
                continue  # the matrix runs the detectors only
            counts["total"] += 1
            counts[outcome] += 1
            settings = test.hypothesis
            if settings:
                profiles.add(settings.profile or "none")
                examples[nodeid] = test.examples or {}
                if expectation.profile and (
                    settings.profile != expectation.profile
                    or not settings.derandomize
                    or settings.max_examples < MIN_EXAMPLES
                    or settings.report_multiple_bugs
                ):
                    reasons.append(
                        f"{nodeid} ran under hypothesis profile {settings.profile!r} "
                        f"(max_examples {settings.max_examples}, derandomize {settings.derandomize}, "
                        f"report_multiple_bugs {settings.report_multiple_bugs}): the gate requires "
                        f"profile {expectation.profile!r}, derandomized, >= {MIN_EXAMPLES} examples, one bug reported"
                    )
            if settings and outcome == Outcome.PASSED:
                reasons += _search_reasons(nodeid, settings, test.examples or {})
            for name in names:
                _count(rows[name], outcome, source)
            if not names:
                # optax's own tests may skip what this machine lacks (several devices, say).
                if outcome != Outcome.PASSED and not (outcome == Outcome.SKIPPED and source == "optax"):
                    reasons.append(f"PASS_TO_PASS {_describe(test)}")
                continue
            if outcome in (Outcome.CRASHED, Outcome.SKIPPED, Outcome.NOT_RUN):
                reasons.append(f"{_describe(test)}: not a detection")
                continue
            wanted = expectation.wants(names)
            if wanted == "reproduced" and outcome != Outcome.REPRODUCED:
                reasons.append(f"{', '.join(names)}: {nodeid} passed: it no longer detects its defect")
            elif wanted == "passed" and outcome != Outcome.PASSED:
                reasons.append(f"{', '.join(names)} present: {_describe(test)}")
    for name, row in rows.items():
        row.outcome = _outcome(row, expectation.of(name))
        expected = expectation.of(name)
        if row.detectors == 0 and expected in ("present", "limit (present)", "absent"):
            if any(record.inventory for record in records.values()):
                reasons.append(f"{name}: no detector ran in the suite")
        if expectation.measure and row.outcome.startswith("not measured"):
            reasons.append(f"{name}: {row.outcome}")
    profile = ", ".join(sorted(profiles)) or "no hypothesis test"
    return Verdict(
        session,
        "red" if reasons else "green",
        profile,
        _unique(reasons),
        rows,
        dict(expectation.accepted),
        counts,
        examples,
    )


def _run_reasons(label: str, record: Record) -> list[str]:
    """What the run as a whole says, whatever its tests' records say."""
    reasons = []
    if record.timed_out:
        running = ", ".join(record.running) or "no test (between tests)"
        reasons.append(
            f"{label}: the run hit its time bound of {record.timed_out} s and was killed while running {running}"
        )
    code = record.exitstatus
    if code not in (0, 1) and not record.timed_out:
        what = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}.get(
            code, "no exit status"
        )
        reasons.append(f"{label}: pytest exited with status {code} ({what}): only 0 or 1 ends a complete run")
    for nodeid in record.crashed_workers:
        reasons.append(f"{label}: the worker running {nodeid} died")
    return reasons


def _inventory_reasons(collected: dict[str, list[str]], expectation: Expectation) -> list[str]:
    expected = expectation.inventory
    if expectation.detectors_only:
        expected = {k: v for k, v in expected.items() if v}
        collected = {k: v for k, v in collected.items() if v}
    missing = sorted(set(expected) - set(collected))
    extra = sorted(set(collected) - set(expected))
    remarked = sorted(k for k in set(expected) & set(collected) if sorted(expected[k]) != sorted(collected[k]))
    hint = "(regenerate lbfgs_gate/suite/inventory.json with `nox -s inventory` when the suite changes)"
    reasons = []
    if missing:
        reasons.append(
            f"suite: {len(missing)} test(s) of the committed inventory not collected, e.g. {missing[0]} {hint}"
        )
    if extra:
        reasons.append(
            f"suite: {len(extra)} test(s) collected that the inventory does not list, e.g. {extra[0]} {hint}"
        )
    for nodeid in remarked:
        reasons.append(
            f"suite: {nodeid} is marked {sorted(collected[nodeid])}, "
            f"the inventory says {sorted(expected[nodeid])} {hint}"
        )
    return reasons


def _search_reasons(nodeid: str, settings: HypothesisSettings, examples: dict[str, int]) -> list[str]:
    """A property that passed must have searched."""
    if "generate" not in settings.phases or not examples.get("generated"):
        return [f"{nodeid} passed without its generate phase (phases {settings.phases}): it did not search"]
    valid, discarded = examples.get("valid", 0), examples.get("invalid", 0)
    if valid < MIN_EXAMPLES:
        return [f"{nodeid} passed on {valid} valid examples: the gate requires >= {MIN_EXAMPLES}"]
    if discarded > MAX_DISCARDED * (valid + discarded):
        return [
            f"{nodeid} discarded {discarded} of {valid + discarded} examples (assume or invalid draws): "
            f"the gate allows at most {MAX_DISCARDED:.0%}"
        ]
    return []


def _unique(reasons: list[str]) -> list[str]:
    return list(dict.fromkeys(reasons))


def _outcome(row: Row, expected: str) -> str:
    if expected == "not judged":
        return expected
    failing = row.crashed + row.skipped + row.not_run
    total = row.detectors + row.optax_tests
    reproduced = row.reproduced + row.optax_reproduced
    if total == 0:
        return "no detector"
    if reproduced:
        state = "present"
    elif failing:
        return f"not measured ({failing} crashed, skipped or not run)"
    else:
        state = "absent"
    if expected == "accepted":
        return f"accepted, {state}"
    if failing:
        return f"{state}, but {failing} crashed, skipped or not run"
    if expected in ("present", "limit (present)"):
        return "reproduced" if reproduced == total else f"present, {total - reproduced} detectors missed it"
    return state


# --- showing it ---------------------------------------------------------------------------------


def table(verdict: Verdict) -> str:
    """The verdict table a person reads, then one line: GATE GREEN or GATE RED: why."""
    header = ["defect", "expected", "suite detectors reproduced/total", "optax-side tests", "outcome"]
    lines = [header]
    for name, row in verdict.defects.items():
        if row.expected == "not judged":
            continue  # a run that judges some defects only (check, a stage of tools/hunk_proof.py)
        optax = f"{row.optax_reproduced}/{row.optax_tests} reproduced" if row.optax_tests else "-"
        lines.append([name, row.expected, f"{row.reproduced}/{row.detectors}", optax, row.outcome])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    for name, reason in verdict.accepted.items():
        text.insert(0, f"ACCEPTED: {name} (present or not, it does not make the verdict red): {reason}")
    counts = verdict.tests
    text.append(
        f"tests: {counts['total']} ({counts['passed']} passed, {counts['reproduced']} reproduced a defect, "
        f"{counts['crashed']} crashed, {counts['skipped']} skipped, {counts['not run']} not run); "
        f"hypothesis profile: {verdict.profile}"
    )
    text.append(_examples_line(verdict.examples))
    if verdict.green:
        text.append(f"GATE GREEN: {verdict.session}")
    else:
        shown = verdict.reasons[:8]
        more = len(verdict.reasons) - len(shown)
        text += [f"  - {reason}" for reason in shown] + ([f"  - ... and {more} more"] if more else [])
        text.append(
            f"GATE RED: {verdict.session}: {verdict.reasons[0]}"
            + (f" (and {len(verdict.reasons) - 1} more)" if len(verdict.reasons) > 1 else "")
        )
    return "\n".join(text)


def _examples_line(examples: dict[str, dict]) -> str:
    """Examples per property (valid ones), and the share hypothesis discarded (assume() or an
    invalid draw); per property in verdict.json."""
    if not examples:
        return "hypothesis: no property ran"
    valid = [e.get("valid", 0) for e in examples.values()]
    discarded = {nodeid: e.get("invalid", 0) for nodeid, e in examples.items()}
    total = sum(valid) + sum(discarded.values())
    ran = {nodeid: discarded[nodeid] + examples[nodeid].get("valid", 0) for nodeid in examples}
    worst = max(discarded, key=lambda nodeid: discarded[nodeid] / max(1, ran[nodeid]))
    worst_total = ran[worst]
    return (
        f"hypothesis: {len(examples)} properties, valid examples per property {min(valid)} to {max(valid)}; "
        f"discarded {sum(discarded.values())}/{total} (most: {discarded[worst]}/{worst_total} in "
        f"{worst.split('::')[-1]})"
    )


def markdown(verdict: Verdict, context: list[str] = ()) -> str:
    first = "GATE GREEN" if verdict.green else f"GATE RED: {verdict.reasons[0]}"
    lines = [f"# {verdict.session}: {first}", ""]
    lines += [f"- **accepted** `{name}`: {reason}" for name, reason in verdict.accepted.items()]
    lines += [f"- {line}" for line in context]
    lines += [
        "",
        "| defect | expected | suite detectors reproduced/total | optax-side tests | outcome |",
        "|---|---|---|---|---|",
    ]
    for name, row in verdict.defects.items():
        optax = f"{row.optax_reproduced}/{row.optax_tests}" if row.optax_tests else "-"
        lines.append(f"| {name} | {row.expected} | {row.reproduced}/{row.detectors} | {optax} | {row.outcome} |")
    if verdict.reasons:
        lines += ["", "## Why red", ""] + [f"- {reason}" for reason in verdict.reasons]
    return "\n".join(lines) + "\n"


def write(verdict: Verdict, folder: Path, context: list[str] = (), extra: dict | None = None) -> None:
    """verdict.json and report.md into `folder` (junit.xml and the log are written by the run)."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {**verdict.to_json(), **(extra or {})}
    (folder / "verdict.json").write_text(json.dumps(document, indent=2) + "\n")
    (folder / "report.md").write_text(markdown(verdict, context))


def optax_suite_differences(published: dict[str, str], patched: dict[str, str], series_modules: list[str]) -> list[str]:
    """optax's whole suite (`nox -s optax_suite`), as published against with the series, test id -> outcome:
    the differences that break the claim, one line each (empty: the series adds its tests and changes no
    other outcome)."""
    problems = []
    from_series = {t for t in patched if any(t.startswith(m + ".") for m in series_modules)}
    for test_id in sorted(set(published) | set(patched)):
        before, after = published.get(test_id), patched.get(test_id)
        if test_id in from_series:
            if after != "passed":
                problems.append(f"{test_id}: a test of the series, {after} with the series")
            elif before is not None:
                problems.append(f"{test_id}: a test of the series, but the release as published has it")
        elif after is None:
            problems.append(f"{test_id}: {before} as published, not run with the series")
        elif before is None:
            problems.append(f"{test_id}: new with the series ({after}), not from one of its test modules")
        elif before != after:
            problems.append(f"{test_id}: {before} as published, {after} with the series")
    return problems


def optax_suite_verdict(differences: list[str]) -> str:
    """Green only when the series adds its tests and changes no other outcome of optax's suite."""
    return "red" if differences else "green"


def load_record(path: Path, label: str, returncode: int | None) -> Record:
    """A record written by lbfgs_gate.record, with its process's exit status; a missing one is
    an empty run (red), rebuilt from the progress its controller logged where there is one."""
    if not Path(path).is_file():
        record = load_progress(Path(path))
        record.collection_errors = [f"{label}: pytest wrote no record (exit {returncode})"]
    else:
        record = load(path)
    record.exitstatus = returncode
    return record
