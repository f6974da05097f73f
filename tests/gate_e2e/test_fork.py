"""The fork gate end to end: `python -m lbfgs_gate fork` on simulated forks, whole suite each time.

Each run builds a jax environment and runs lbfgs_gate/suite (minutes each), so these run
in their own session, `nox -s fork_e2e`, not in gate_selftest. The simulated forks are
built offline from the sdists, as in tests/gate/test_fork.py.
"""

import json

import pytest

from lbfgs_gate import PATCHES_DIR, defects, series
from tests.gate import forks
from tests.gate.forks import P0001, P0002, P0005, P0006, P0007

# Every defect the series fixes is in optax 0.2.4 as published (the series is made for it).
PATCHABLE = {d.name: d.patch for d in defects.DEFECTS.values() if d.patch is not None}
# Every patch of the series, in order (the option 0007 included): what --apply must apply.
SERIES = [p.name for p in series.read_series()]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, sdist_dir):
    return forks.pristine(sdist_dir, "0.2.4", tmp_path_factory.mktemp("forks") / "pristine-0.2.4")


@pytest.fixture()
def fork_gate(gate, tmp_path):
    output = tmp_path / "out"

    def run(*args):
        result = gate("fork", *args, "--output", str(output))
        report = json.loads((output / "verdict.json").read_text())
        assert (output / "junit.xml").is_file() and (output / "report.md").is_file()
        return result, report

    run.output = output
    return run


def _defects(report):
    return {d["name"]: d for d in report["findings"]}


def _only_defects(report):
    """Every reason the verdict is red is a defect's detector: nothing crashed or was skipped."""
    return all(" present: " in reason for reason in report["reasons"])


def test_pristine_0_2_4_fork_is_red_naming_each_defect_its_patch_and_git_am(pristine, fork_gate):
    result, report = fork_gate(str(pristine))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    assert report["verdict"] == "red"
    found = _defects(report)
    assert {name: d["patch"] for name, d in found.items()} == PATCHABLE
    assert _only_defects(report), report["reasons"]
    seed = found["seed-leak"]
    assert seed["patch"] == P0001 and seed["patch_state"] == "applies"
    command = f"git -C {pristine} am {PATCHES_DIR / P0001}"
    assert seed["command"] == command
    assert "defect seed-leak present" in result.stderr and command in result.stderr
    assert "reproduce:" in seed["example"]["message"] or "Failing test case" in seed["example"]["message"]
    markdown = (fork_gate.output / "report.md").read_text()
    assert markdown.startswith("# optax fork gate: GATE RED") and command in markdown


def test_fork_with_the_series_applied_by_git_am_is_green(pristine, fork_gate, tmp_path):
    fork = forks.with_series(pristine, tmp_path / "series-applied")
    result, report = fork_gate(str(fork))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert report["verdict"] == "green" and report["findings"] == [] and report["reasons"] == []
    assert report["tests"]["crashed"] == 0 and report["tests"]["total"] > 0
    assert "fork gate GREEN" in result.stdout


def test_apply_makes_the_pristine_fork_green_in_a_scratch_copy(pristine, fork_gate):
    head = forks.git(pristine, "rev-parse", "HEAD")
    result, report = fork_gate(str(pristine), "--apply")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert report["verdict"] == "green"
    assert [(a["patch"], a["how"], a["ok"]) for a in report["applied"]] == [(p, "git am", True) for p in SERIES]
    assert forks.git(pristine, "rev-parse", "HEAD") == head, "--apply changed the fork itself"
    assert forks.git(pristine, "status", "--porcelain") == ""


def test_apply_on_a_conflicting_fork_goes_green_through_0003_and_names_the_conflict(pristine, fork_gate, tmp_path):
    # 0001 conflicts with the fork's edit; 0003 stops the gradient through the identity scale
    # where the two-loop recursion uses it, the first step's capped norm included, so with
    # 0002 to 0004 applied the seed leak is gone as well.
    fork = forks.with_conflicting_edit(pristine, tmp_path / "conflicting-edit")
    result, report = fork_gate(str(fork), "--apply")
    applied = {a["patch"]: (a["how"], a["ok"]) for a in report["applied"]}
    # 0007 edits the lines 0001 writes (the first step's capped scale): it falls with 0001.
    assert applied == {p: ("git am -3", False) if p in (P0001, P0007) else ("git am", True) for p in SERIES}
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert report["verdict"] == "green" and report["findings"] == [] and report["reasons"] == []
    states = {p["patch"]: (p["state"], p["detail"]) for p in report["patches"]}
    assert states[P0001] == ("conflicts", "optax/_src/transform.py, hunk at line 1698")


def test_newest_release_fork_is_judged_with_its_own_pins_and_lacks_0002_to_0004(sdist_dir, fork_gate, tmp_path):
    fork = forks.pristine(sdist_dir, "0.2.8", tmp_path / "pristine-0.2.8")
    result, report = fork_gate(str(fork))
    assert report["fork"]["constraints"] == "constraints/optax-0.2.8.txt", "no pins made for optax 0.2.8"
    # 0.2.8 ships upstream's fix for the seed leak, and none of the others.
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    assert set(_defects(report)) == {
        "reverse-nan",
        "memory-leak",
        "stepsize-leak",
        "weight-underflow",
        "stalled-memory-divergence",
    }
    assert _only_defects(report), report["reasons"]
    reverse = _defects(report)["reverse-nan"]
    assert reverse["command"] == f"git -C {fork} am {PATCHES_DIR / '0.2.8' / P0002}"


def test_fork_relabelled_as_a_newer_version_gets_its_base_releases_pins(pristine, fork_gate, tmp_path):
    # 0.2.4 with 0001 to 0004, lacking 0005 (and 0006 and 0007, made on top of it), calling
    # itself 0.2.9.dev0: by its version it would get 0.2.8's pins (jax 0.10.2).
    patches = [p for p in series.read_series() if p.name not in (P0005, P0006, P0007)]
    fork = forks.relabelled(pristine, tmp_path / "relabelled", "0.2.9.dev0", patches)
    result, report = fork_gate(str(fork))
    assert report["fork"]["base_release"] == "0.2.4" and report["fork"]["optax_version"] == "0.2.9.dev0"
    assert report["fork"]["constraints"] == "constraints/optax-0.2.4.txt"
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    assert set(_defects(report)) == {"weight-underflow", "stalled-memory-divergence"}


def test_fork_that_rewrites_the_suite_on_import_is_red(pristine, fork_gate, tmp_path):
    fork = forks.hostile(pristine, tmp_path / "hostile")
    result, report = fork_gate(str(fork))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    # Its detectors were silenced; the patches it lacks still apply, and say so: no defect
    # the series fixes reads plainly absent.
    outcomes = {name: report["defects"][name]["outcome"] for name in PATCHABLE}
    assert "absent" not in outcomes.values(), outcomes
    assert any(" reads absent, yet " in r for r in report["reasons"]), report["reasons"]
