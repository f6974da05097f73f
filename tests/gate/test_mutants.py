"""Mutants of the series: its hunks cut one by one, each reversed alone on the patched tree (no jax)."""

import json
import shutil
import subprocess

import pytest

from lbfgs_gate import PATCHES_DIR, defects, inventory, mutants, run_record, sdist, series, tree
from lbfgs_gate.run_record import Outcome, Record

SERIES = PATCHES_DIR / "series"


def _patched(release, sdist_dir):
    return tree.prepare(release, SERIES, sdist_dir, report=lambda _: None)


@pytest.mark.parametrize("patch", series.read_series(), ids=lambda p: p.name[:4])
def test_the_hunks_of_a_patch_are_its_hunks_and_nothing_else(patch):
    hunks = mutants.split_hunks(patch)
    text = patch.read_text()
    assert [h.header for h in hunks] == [line for line in text.splitlines() if line.startswith("@@ ")]
    # Each hunk's lines, concatenated, are the patch's, in order; no mbox signature in any.
    assert all("\n-- \n" not in h.diff and not h.diff.rstrip().endswith("2.39.5") for h in hunks)
    # Per file, as many lines added and removed as git itself counts in the patch.
    numstat = subprocess.run(["git", "apply", "--numstat", str(patch)], capture_output=True, text=True, check=True)
    counted = {}
    for line in numstat.stdout.splitlines():
        added, removed, file = line.split("\t")
        counted[file] = (int(added), int(removed))
    assert counted == {
        file: (sum(len(h.added) for h in hunks if h.file == file), sum(len(h.removed) for h in hunks if h.file == file))
        for file in {h.file for h in hunks}
    }


def test_a_removed_line_that_looks_like_the_signature_stays_in_its_hunk(tmp_path):
    patch = tmp_path / "0001-x.patch"
    patch.write_text(
        "Subject: [PATCH] x\n---\n"
        "diff --git a/f.py b/f.py\n--- a/f.py\n+++ b/f.py\n"
        "@@ -1,2 +1,1 @@\n a = 1\n-- \n"
        "diff --git a/g_test.py b/g_test.py\nnew file mode 100644\n--- /dev/null\n+++ b/g_test.py\n"
        "@@ -0,0 +1 @@\n+x = 1\n-- \n2.39.5\n"
    )
    first, second = mutants.split_hunks(patch)
    assert first.removed == ["- "] and first.file == "f.py" and mutants.is_library(first.file)
    assert second.added == ["x = 1"] and not mutants.is_library(second.file)


@pytest.mark.parametrize("release", ["0.2.4", "0.2.8"])
def test_library_hunks_are_those_of_the_applied_patches_outside_test_modules(release, sdist_dir):
    patched = _patched(release, sdist_dir)
    hunks = mutants.library_hunks(patched, SERIES)
    assert hunks and all(not h.file.endswith("_test.py") for h in hunks)
    applied = [s for s in tree.statuses(patched) if s.state == "applies"]
    order = [s.patch for s in applied]
    assert [h.patch for h in hunks] == sorted((h.patch for h in hunks), key=order.index)
    assert {h.patch for h in hunks} == {s.patch for s in applied}
    # 0001 is upstream from 0.2.5 on: nothing of it to reverse on the newest release.
    assert any(h.patch.startswith("0001") for h in hunks) == (release == "0.2.4")
    # The hunks come from the file that was applied: the release's variant where there is one.
    assert {h.source for h in hunks} == {s.source for s in applied}


@pytest.mark.parametrize("release", ["0.2.4", "0.2.8"])
def test_each_mutant_differs_from_the_patched_tree_by_its_hunk_alone(release, sdist_dir, tmp_path):
    patched = _patched(release, sdist_dir)
    for hunk in mutants.library_hunks(patched, SERIES):
        mutant = tmp_path / hunk.slug
        reversal = mutants.build_mutant(patched, hunk, mutant)
        post_image = "\n".join(
            line[1:] for line in hunk.diff.splitlines()[1:] if line[:1] in (" ", "+") and not line.startswith("+++")
        )
        if post_image not in (patched / hunk.file).read_text():
            # A later patch rewrote lines inside this hunk (0005 over 0002, 0006 over 0003).
            # Reversed alone, exactly, or reported as not reversible (red): never guessed.
            if not reversal.ok:
                assert "cannot be reversed alone" in reversal.detail, hunk.label
                continue
        assert reversal.ok, f"{hunk.label}: {reversal.detail}"
        removed, added = mutants.changed_lines(patched / hunk.file, mutant / hunk.file)
        assert (removed, added) == (hunk.added, hunk.removed), hunk.label
        others = [p.relative_to(mutant) for p in mutant.rglob("*.py") if p.relative_to(mutant).as_posix() != hunk.file]
        assert all((mutant / p).read_bytes() == (patched / p).read_bytes() for p in others), hunk.label
        shutil.rmtree(mutant)


def test_the_hunk_0005_rewrote_the_context_of_is_reversed_with_less_context(sdist_dir, tmp_path):
    patched = _patched("0.2.4", sdist_dir)
    weight = next(h for h in mutants.library_hunks(patched, SERIES) if h.patch.startswith("0002"))
    # Its context line `vdot_diff_params_updates = otu.tree_vdot(...)` is 0005's: as cut, it does not reverse.
    assert mutants._git(patched, "apply", "-R", "--check", "-", stdin=weight.diff).returncode != 0
    reversal = mutants.build_mutant(patched, weight, tmp_path / "mutant")
    assert reversal.ok and "-C" in reversal.detail
    text = (tmp_path / "mutant" / weight.file).read_text()
    assert "1.0 / vdot_diff_params_updates" in text and "safe_vdot_diff_params_updates" not in text
    # 0005 stays (0007 made its stop_gradient conditional on exact_unroll_derivatives).
    assert (
        "_stop_gradient_unless(\n        exact_unroll_derivatives,\n        otu.tree_vdot(diff_updates, diff_params)"
        in text
    )


def test_a_hunk_that_is_not_in_the_tree_is_not_reversed_and_leaves_no_mutant(sdist_dir, tmp_path):
    patched = _patched("0.2.4", sdist_dir)
    hunk = mutants.library_hunks(patched, SERIES)[0]
    stray = mutants.Hunk(
        hunk.patch, hunk.source, hunk.file, 1, hunk.header, hunk.diff.replace("stop_gradient(updates)", "nowhere()")
    )
    reversal = mutants.build_mutant(patched, stray, tmp_path / "mutant")
    assert not reversal.ok and "cannot be reversed alone" in reversal.detail
    assert not (tmp_path / "mutant").exists()


@pytest.mark.parametrize("release", ["0.2.4", "0.2.8"])
def test_each_stage_is_the_series_up_to_its_patch_and_each_hunk_reverses_on_it_exactly(release, sdist_dir, tmp_path):
    patched = _patched(release, sdist_dir)
    statuses = tree.statuses(patched)
    stages = mutants.prefixes(statuses)
    applied = [s for s in statuses if s.state == "applies"]
    assert [stage.patch for stage in stages] == [s.patch for s in applied]
    assert all(stage.sources == tuple(s.source for s in applied[: i + 1]) for i, stage in enumerate(stages))
    # An option's stage (0007) judges the option, not a defect.
    assert [stage.defect is None for stage in stages] == [s.patch in defects.OPTIONS for s in applied]
    pristine = tmp_path / "pristine"
    sdist.unpack(sdist.fetch(release, sdist_dir), pristine)
    for stage in stages:
        prefix = mutants.build_prefix(pristine, stage, SERIES, tmp_path / "stage")
        hunks = mutants.stage_hunks(stage, SERIES)
        assert hunks and {h.patch for h in hunks} == {stage.patch}
        for hunk in hunks:
            mutant = tmp_path / hunk.slug
            reversal = mutants.build_mutant(prefix, hunk, mutant)
            # On its own stage no later patch has touched its lines: full context, git apply -R.
            assert reversal.ok and reversal.detail == "git apply -R", f"{hunk.label}: {reversal.detail}"
            removed, added = mutants.changed_lines(prefix / hunk.file, mutant / hunk.file)
            assert (removed, added) == (hunk.added, hunk.removed), hunk.label
            shutil.rmtree(mutant)
    # The last stage is the whole series: the patched tree, file for file.
    last = mutants.build_prefix(pristine, stages[-1], SERIES, tmp_path / "stage")
    assert all(
        (last / p.relative_to(patched)).read_bytes() == p.read_bytes() for p in (patched / "optax").rglob("*.py")
    )


@pytest.mark.parametrize("release", ["0.2.4", "0.2.8"])
def test_each_stage_has_detectors_that_read_its_defect_alone(release, sdist_dir):
    expected = inventory.expected()
    stages = mutants.prefixes(tree.statuses(_patched(release, sdist_dir)))
    fixed = set()
    for stage in stages:
        nodes = mutants.detectors(stage, expected)
        assert nodes, f"{stage.label}: no test reads {stage.judged} alone"
        if stage.defect is None:  # an option: its module of PASS_TO_PASS tests, whole
            module = defects.OPTIONS[stage.patch].tests
            assert set(nodes) == {n for n in expected if n.startswith(f"lbfgs_gate/suite/{module}::")}
            continue
        assert all(stage.defect in names and set(names) <= stage.fixed for names in nodes.values())
        fixed |= stage.fixed
    # A test marked with two defects waits for the stage that fixes both (0004: memory and stepsize).
    both = {k for k, v in expected.items() if set(v) == {"memory-leak", "stepsize-leak"}}
    by_defect = {stage.defect: mutants.detectors(stage, expected) for stage in stages}
    assert both and not both & set(by_defect["memory-leak"]) and both <= set(by_defect["stepsize-leak"])
    # 0001 is upstream in 0.2.8: its defect counts as fixed from the first stage on.
    assert ("seed-leak" in stages[0].fixed) and (stages[0].defect == "seed-leak") == (release == "0.2.4")


def _row(release, caught, patch="0001-x.patch"):
    hunk = {"patch": patch, "file": "optax/_src/transform.py", "hunk": "@@ -1 +1 @@", "release": release}
    return {**hunk, "caught": caught, "by": ["lbfgs_gate/suite/test_x.py::test_y"] if caught else []}


def _write_release(release, rows, fingerprint):
    folder = mutants.reports_root() / release
    folder.mkdir(parents=True, exist_ok=True)
    reasons = mutants._reasons([{**r, "verdict": "green"} for r in rows])
    document = mutants._document(rows, reasons, release=release, fingerprint=fingerprint)
    (folder / "verdict.json").write_text(json.dumps(document))


def test_the_combined_verdict_is_green_only_when_every_release_ran_with_this_series_and_caught_all():
    base, newest = mutants.releases()
    current = mutants.fingerprint(SERIES)
    _write_release(base, [_row(base, True)], current)
    assert mutants.write_combined(SERIES)["verdict"] == "red"  # the newest did not run
    _write_release(newest, [_row(newest, True)], "another series")
    assert "another series" in mutants.write_combined(SERIES)["reasons"][0]
    _write_release(newest, [_row(newest, True)], current)
    combined = mutants.write_combined(SERIES)
    assert combined["verdict"] == "green" and [r["release"] for r in combined["hunks"]] == [base, newest]
    _write_release(newest, [_row(newest, False)], current)
    combined = json.loads((mutants.reports_root() / "verdict.json").read_text())
    assert combined["verdict"] == "green"  # written only by write_combined
    assert mutants.write_combined(SERIES)["verdict"] == "red"


def test_reports_are_cleared_before_the_release_is_checked(gate):
    planted = gate.work / "reports" / "mutants"
    (planted / "0.2.4").mkdir(parents=True)
    for path in (planted / "verdict.json", planted / "0.2.4" / "verdict.json"):
        path.write_text('{"session": "mutants", "verdict": "green"}')
    result = gate("mutants", "--release", "0.2.4", "--", "-k", "seed")
    assert result.returncode == 2 and "`-k` is not allowed" in result.stderr
    assert not (planted / "verdict.json").exists() and not (planted / "0.2.4").exists()
    (planted / "verdict.json").write_text('{"session": "mutants", "verdict": "green"}')
    result = gate("mutants", "--release", "9.9.9")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "9.9.9" in result.stderr
    assert not (planted / "verdict.json").exists()


def test_a_hunk_of_docstrings_only_is_told_from_a_hunk_of_code(sdist_dir, tmp_path):
    patched = _patched("0.2.4", sdist_dir)
    stage = next(s for s in mutants.prefixes(tree.statuses(patched)) if s.label == "0006")
    pristine = tmp_path / "pristine"
    sdist.unpack(sdist.fetch("0.2.4", sdist_dir), pristine)
    prefix = mutants.build_prefix(pristine, stage, SERIES, tmp_path / "stage")
    kinds = {}
    for hunk in mutants.stage_hunks(stage, SERIES):
        mutant = tmp_path / hunk.slug
        assert mutants.build_mutant(prefix, hunk, mutant).ok
        kinds[hunk.index] = mutants.same_code(prefix / hunk.file, mutant / hunk.file)
    # 0006's first hunk documents the state's new fields; every other one changes code.
    first = min(kinds)
    assert kinds == {index: index == first for index in kinds} and len(kinds) == 8


def test_a_mutant_whose_detectors_raise_another_error_breaks_the_code():
    tests = [
        run_record.TestRecord("a", outcome=Outcome.CRASHED, exception="NameError"),
        run_record.TestRecord("b", outcome=Outcome.PASSED),
        run_record.TestRecord("c", outcome=Outcome.REPRODUCED),
    ]
    record = Record(
        inventory={"a": ["memory-leak"], "b": ["memory-leak"], "c": ["seed-leak"]},
        tests={test.nodeid: test for test in tests},
    )
    stage = mutants.Stage("0003-x.patch", "0003-x.patch", "memory-leak", ("0003-x.patch",), frozenset())
    assert mutants.breaks({"suite": record}, stage) == "NameError"
    record.tests["b"].outcome = Outcome.REPRODUCED
    assert mutants.breaks({"suite": record}, stage) is None  # the symptom: caught, not broken


def test_an_option_shows_its_symptom_by_a_failed_assertion_in_the_call_not_by_another_error():
    option = next(iter(defects.OPTIONS))
    stage = mutants.Stage(option, option, None, (option,), frozenset())
    record = Record(
        inventory={"a": [], "b": []},
        tests={
            "a": run_record.TestRecord("a", outcome=Outcome.CRASHED, phase="call", exception="TypeError"),
            "b": run_record.TestRecord("b", outcome=Outcome.PASSED),
        },
    )
    assert mutants.symptom_by(record, stage) == [] and mutants.breaks({"suite": record}, stage) == "TypeError"
    record.tests["b"] = run_record.TestRecord("b", outcome=Outcome.CRASHED, phase="call", exception="AssertionError")
    assert mutants.symptom_by(record, stage) == ["b"] and mutants.breaks({"suite": record}, stage) is None
    record.tests["b"].phase = "setup"  # a fixture's assertion is not the option's property
    assert mutants.symptom_by(record, stage) == []


def test_a_mutant_whose_suite_does_not_import_breaks_the_code():
    # Reversing a signature hunk alone can break optax's import (0007's module-level linesearch).
    option = next(iter(defects.OPTIONS))
    stage = mutants.Stage(option, option, None, (option,), frozenset())
    record = Record(collection_errors=["lbfgs_gate/suite/test_exact_unrolls.py: E   TypeError: ..."])
    assert mutants.breaks({"suite": record}, stage) == "collection error"
