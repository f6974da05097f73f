"""The fork gate's patch table, verdict logic and error paths, on simulated forks (no jax).

The forks are git repositories built from the package index's sdists: optax 0.2.4 as
published, the same with the series applied by `git am`, one with a local edit that
makes 0001 conflict, and the newest release. Runs of the whole suite on them (which
need a jax environment each) are in tests/gate_e2e, run by `nox -s fork_e2e`.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from lbfgs_gate import PATCHES_DIR, PROJECT_ROOT, defects, sdist, series
from lbfgs_gate import verdict as verdicts
from lbfgs_gate.fork import _unseen_defects, base, environment
from lbfgs_gate.fork.advice import find_defects, patch_statuses
from lbfgs_gate.fork.report import Report, markdown
from lbfgs_gate.fork.source import Checkout
from tests.gate import forks
from tests.gate.forks import P0001, P0002, P0003, P0004, P0005, P0006, P0007

SERIES = tuple(patch.name for patch in series.read_series())


def _all(state):
    return {patch: (state, "") for patch in SERIES}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, sdist_dir):
    """The simulated forks, built once for the module (they are only read)."""
    root = tmp_path_factory.mktemp("forks")
    pristine = forks.pristine(sdist_dir, "0.2.4", root / "pristine-0.2.4")
    return {
        "pristine": pristine,
        "series": forks.with_series(pristine, root / "series-applied"),
        "conflict": forks.with_conflicting_edit(pristine, root / "conflicting-edit"),
        "newest": forks.pristine(sdist_dir, "0.2.8", root / "pristine-0.2.8"),
    }


@pytest.fixture()
def fork_gate(gate, tmp_path):
    """`python -m lbfgs_gate fork ...` with private output and temporary folders.

    Returns (process, verdict.json as a dict or None); `fork_gate.output` and
    `fork_gate.tmp` are the folders, for checking that nothing is left behind.
    """
    output, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()

    def run(*args):
        result = gate("fork", *args, "--output", str(output), env={"TMPDIR": str(scratch)})
        report = output / "verdict.json"
        return result, (json.loads(report.read_text()) if report.is_file() else None)

    run.output, run.tmp = output, scratch
    return run


def _states(report):
    return {p["patch"]: (p["state"], p["detail"]) for p in report["patches"]}


# --- the patch table ---------------------------------------------------------------------------


def test_pristine_fork_lacks_every_patch_and_each_applies_cleanly(simulated, fork_gate):
    result, report = fork_gate(str(simulated["pristine"]), "--table-only")
    assert result.returncode == 0, result.stderr
    assert _states(report) == _all("applies")
    assert report["fork"]["optax_version"] == "0.2.4"
    assert report["fork"]["constraints"] == "constraints/optax-0.2.4.txt" and report["fork"]["constraints_exact"]
    assert report["verdict"] == "not run"
    for patch in SERIES:
        assert any(line.startswith(patch) and "applies" in line for line in result.stdout.splitlines()), result.stdout
    markdown = (fork_gate.output / "report.md").read_text()
    assert f"| `{P0001}` | applies cleanly |" in markdown
    assert not fork_gate.tmp.exists() or not any(fork_gate.tmp.iterdir()), "the scratch checkout was left behind"


def test_advised_git_am_command_applies_the_missing_patches_to_the_fork(simulated, fork_gate, tmp_path):
    own_checkout = forks.copy(simulated["pristine"], tmp_path / "maintainers-checkout")
    _, report = fork_gate(str(own_checkout), "--table-only")
    command = shlex.split(report["apply_all"])
    assert command[:3] == ["git", "-C", str(own_checkout)] and command[3] == "am", report["apply_all"]
    subprocess.run(command, env=forks.GIT_ENV, check=True, capture_output=True)
    _, after = fork_gate(str(own_checkout), "--table-only")
    assert _states(after) == _all("applied")
    assert after["apply_all"] == ""


def test_fork_with_the_series_applied_by_git_am_has_every_patch_already(simulated, fork_gate):
    result, report = fork_gate(str(simulated["series"]), "--table-only")
    assert result.returncode == 0, result.stderr
    assert _states(report) == _all("applied")
    assert report["apply_all"] == ""


def test_local_edit_inside_scale_by_lbfgs_makes_0001_conflict_naming_file_and_hunk(simulated, fork_gate):
    result, report = fork_gate(str(simulated["conflict"]), "--table-only")
    assert result.returncode == 0, result.stderr
    states = _states(report)
    assert states[P0001] == ("conflicts", "optax/_src/transform.py, hunk at line 1698")
    assert states[P0002] == states[P0003] == states[P0004] == states[P0005] == ("applies", "")
    assert "| conflicts | optax/_src/transform.py, hunk at line 1698 |" in (fork_gate.output / "report.md").read_text()


def test_newest_release_has_0001_upstream_and_takes_the_0002_variant_made_for_it(simulated, fork_gate):
    result, report = fork_gate(str(simulated["newest"]), "--table-only")
    assert result.returncode == 0, result.stderr
    assert report["fork"]["optax_version"] == "0.2.8"
    states = _states(report)
    assert states[P0001] == ("upstream", "fixed upstream in 0.2.5")
    assert states[P0002] == ("applies", f"variant 0.2.8/{P0002}")
    assert states[P0003] == ("applies", "")
    assert states[P0004] == ("applies", f"variant 0.2.8/{P0004}")
    assert states[P0005] == ("applies", f"variant 0.2.8/{P0005}")
    assert states[P0006] == ("applies", f"variant 0.2.8/{P0006}")
    assert states[P0007] == ("applies", f"variant 0.2.8/{P0007}")
    # The advice names the variants, the files that actually apply to this fork.
    assert report["apply_all"] == (
        f"git -C {simulated['newest']} am {PATCHES_DIR / '0.2.8' / P0002} "
        f"{PATCHES_DIR / P0003} {PATCHES_DIR / '0.2.8' / P0004} {PATCHES_DIR / '0.2.8' / P0005} "
        f"{PATCHES_DIR / '0.2.8' / P0006} {PATCHES_DIR / '0.2.8' / P0007}"
    )


def test_ref_selects_the_commit_to_gate(simulated, fork_gate):
    # One commit back per patch of the series, from the series-applied fork: the release as published.
    _, report = fork_gate(str(simulated["series"]), "--table-only", "--ref", f"HEAD~{len(SERIES)}")
    assert _states(report) == _all("applies")
    assert report["fork"]["ref"] == f"HEAD~{len(SERIES)}"
    assert report["fork"]["commit"] == forks.git(simulated["pristine"], "rev-parse", "HEAD")


def test_branch_of_the_source_is_a_ref(simulated, fork_gate, tmp_path):
    own_checkout = forks.copy(simulated["pristine"], tmp_path / "checkout")
    forks.git(own_checkout, "branch", "release-line")
    forks.git(own_checkout, "am", "--quiet", str(PATCHES_DIR / P0001))
    _, on_branch = fork_gate(str(own_checkout), "--table-only", "--ref", "release-line")
    assert _states(on_branch)[P0001] == ("applies", "")
    _, on_head = fork_gate(str(own_checkout), "--table-only")
    assert _states(on_head)[P0001] == ("applied", "")


def test_file_url_is_gated_offline(simulated, fork_gate):
    result, report = fork_gate(simulated["series"].as_uri(), "--table-only")
    assert result.returncode == 0, result.stderr
    assert _states(report) == _all("applied")


def test_uncommitted_changes_are_named_and_not_gated(simulated, fork_gate, tmp_path):
    own_checkout = forks.copy(simulated["pristine"], tmp_path / "checkout")
    transform = own_checkout / "optax" / "_src" / "transform.py"
    transform.write_text(transform.read_text().replace(forks.WHERE_AS_RELEASED, forks.WHERE_ON_ONE_LINE))
    result, report = fork_gate(str(own_checkout), "--table-only")
    assert "uncommitted changes" in result.stdout
    assert _states(report)[P0001] == ("applies", "")


# --- bad input: one line, exit 2, nothing left behind ----------------------------------------------


def _not_a_repository(simulated, tmp_path):
    plain = tmp_path / "plain-tree"
    subprocess.run(["cp", "-r", str(simulated["pristine"]), str(plain)], check=True)
    subprocess.run(["rm", "-rf", str(plain / ".git")], check=True)
    return str(plain), "is not a git repository"


def _subfolder_of_a_repository(simulated, tmp_path):
    return str(simulated["pristine"] / "optax"), "is not a git repository"


def _missing_path(simulated, tmp_path):
    return str(tmp_path / "no-such-fork"), "does not exist"


def _not_optax(simulated, tmp_path):
    other = tmp_path / "other-project"
    other.mkdir()
    (other / "README.md").write_text("not optax\n")
    forks.git(other, "init", "--quiet")
    forks.git(other, "add", "--all")
    forks.git(other, "commit", "--quiet", "--message", "another project")
    return str(other), "is not an optax source tree"


def _no_commit(simulated, tmp_path):
    empty = tmp_path / "empty-repository"
    empty.mkdir()
    forks.git(empty, "init", "--quiet")
    return str(empty), "has no commit"


def _unreachable_url(simulated, tmp_path):
    return (tmp_path / "nowhere.git").as_uri(), "cannot clone"


BAD_SOURCES = [_not_a_repository, _subfolder_of_a_repository, _missing_path, _not_optax, _no_commit, _unreachable_url]


@pytest.mark.parametrize("bad_source", BAD_SOURCES, ids=lambda f: f.__name__.strip("_"))
def test_bad_source_gives_one_line_error_and_leaves_nothing(bad_source, simulated, fork_gate, tmp_path):
    source, fragment = bad_source(simulated, tmp_path)
    _bad_input_leaves_nothing(fork_gate, [source], fragment)


def test_ref_that_does_not_exist_gives_one_line_error_and_leaves_nothing(simulated, fork_gate):
    source = str(simulated["pristine"])
    _bad_input_leaves_nothing(fork_gate, [source, "--ref", "no-such-ref"], "'no-such-ref' is not a commit")


def _bad_input_leaves_nothing(fork_gate, args, fragment):
    # A previous run's report must not survive to pass for this run's.
    fork_gate.output.mkdir()
    (fork_gate.output / "report.md").write_text("# optax fork gate: GREEN\n")
    # Not --table-only: bad input must be refused before anything is installed.
    result, report = fork_gate(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert report is None
    assert list(fork_gate.output.iterdir()) == [], "reports left behind"
    assert list(fork_gate.tmp.iterdir()) == [], "scratch folders left behind"


# --- the verdict, from a real pytest run with the gate's record ---------------------------------------

SYNTHETIC_SUITE = """
import pytest
from lbfgs_gate.defects import DefectObserved

@pytest.mark.defect("seed-leak")
def test_leaks_through_the_seed():
    raise DefectObserved("Jacobian is not finite\\nreproduce:\\n    print(solve(A, b, x0))")

@pytest.mark.defect("seed-leak")
def test_leaks_again_with_a_longer_report():
    raise DefectObserved("Jacobian is not finite\\nproblem: 3-d\\ndtype float64\\nreproduce:\\n"
                         "    print(solve(A, b, x0))")

@pytest.mark.defect("seed-leak")
def test_seed_without_leak():
    pass

@pytest.mark.defect("reverse-nan")
def test_crashes_for_another_reason():
    raise TypeError("true_fun and false_fun output must have identical types")

def test_pass_to_pass_that_fails():
    assert 1 == 2, "primal value changed"
"""


def _record(tmp_path, suite_text):
    """The record of a small suite, made by pytest with the gate's plugin, as the gate runs it."""
    folder = tmp_path / "synthetic"
    folder.mkdir()
    (folder / "test_synthetic.py").write_text(suite_text)
    record = folder / "record.json"
    # Run from its own folder, so that none of the project's pytest configuration applies.
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "lbfgs_gate.record",
            f"--gate-record={record}",
            "-p",
            "no:cacheprovider",
            "test_synthetic.py",
        ],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        check=False,
    )
    return {"suite": verdicts.load_record(record, "suite", ran.returncode)}


def _checkout(source):
    return Checkout(str(source), "HEAD", "0" * 40, source)


def _table(tree, version="0.2.4"):
    return patch_statuses(tree, version, PATCHES_DIR / "series")


def _with_other_detectors(suite):
    """A passing detector for each defect `suite` has none for, a reproducing one for each limit:
    the verdict wants every registered defect to have run."""
    lines = [suite, "\nfrom lbfgs_gate.defects import DefectObserved\n"]
    for name, defect in defects.DEFECTS.items():
        if f"defect('{name}')" in suite or f'defect("{name}")' in suite:
            continue
        body = "raise DefectObserved('limit')" if defect.patch is None else "pass"
        lines.append(f"\n@pytest.mark.defect({name!r})\ndef test_other_{name.replace('-', '_')}():\n    {body}\n")
    return "".join(lines)


def _findings(tmp_path, tree, suite=SYNTHETIC_SUITE, accepted=None):
    records = _record(tmp_path, _with_other_detectors(suite))
    judged = verdicts.judge("fork", records, verdicts.Expectation(accepted=accepted or {}))
    statuses, paths = _table(tree)
    return judged, find_defects(judged, records, statuses, paths, _checkout(tree))


def test_reproduced_defect_makes_the_verdict_red_naming_defect_patch_and_command(simulated, tmp_path):
    judged, findings = _findings(tmp_path, simulated["pristine"])
    assert judged.verdict == "red"
    # Only the seed leak shows its own symptom; a TypeError is not the reverse-NaN defect.
    (finding,) = findings
    assert (finding.name, finding.patch, finding.patch_state) == ("seed-leak", P0001, "applies")
    assert finding.command == f"git -C {simulated['pristine']} am {PATCHES_DIR / P0001}"
    assert finding.tests == [
        "test_synthetic.py::test_leaks_again_with_a_longer_report",
        "test_synthetic.py::test_leaks_through_the_seed",
    ]
    # The minimal example is the shortest report, whole.
    assert finding.example == {
        "test": "test_synthetic.py::test_leaks_through_the_seed",
        "message": "Jacobian is not finite\nreproduce:\n    print(solve(A, b, x0))",
    }
    assert any("test_crashes_for_another_reason crashed in call (TypeError: true_fun" in r for r in judged.reasons)
    assert any(
        r.startswith("PASS_TO_PASS test_synthetic.py::test_pass_to_pass_that_fails crashed") for r in judged.reasons
    )


def test_defect_whose_patch_conflicts_is_advised_a_three_way_git_am(simulated, tmp_path):
    _, (finding,) = _findings(tmp_path, simulated["conflict"])
    assert finding.patch_state == "conflicts"
    assert finding.command == f"git -C {simulated['conflict']} am -3 {PATCHES_DIR / P0001}"
    assert "optax/_src/transform.py, hunk at line 1698" in finding.advice


def test_defect_in_a_fork_that_carries_its_patch_is_named_with_nothing_to_apply(simulated, tmp_path):
    _, (finding,) = _findings(tmp_path, simulated["series"])
    assert finding.patch_state == "applied" and finding.command == ""
    assert "the tested tree carries it (already applied)" in finding.advice


SUITE_WITHOUT_FAILURES = "import pytest\n\n@pytest.mark.defect('seed-leak')\ndef test_fine():\n    pass\n"


def test_suite_without_failures_is_green(simulated, tmp_path):
    judged, findings = _findings(tmp_path, simulated["series"], SUITE_WITHOUT_FAILURES)
    assert (judged.verdict, findings) == ("green", [])


def test_patch_that_applies_while_its_defect_reads_absent_is_red(simulated, tmp_path):
    # A fork that lacks every patch, whose detectors all pass (a fork that rewrote the
    # suite's check on import, say): each patch that applies cleanly names its defect.
    judged, _ = _findings(tmp_path, simulated["pristine"], SUITE_WITHOUT_FAILURES)
    _unseen_defects(judged, _table(simulated["pristine"])[0])
    assert judged.verdict == "red"
    for name in (n for n, d in defects.DEFECTS.items() if d.patch):
        assert judged.defects[name].outcome == "absent, but its patch applies (suspicious)"
        assert any(r.startswith(f"{name} reads absent, yet ") for r in judged.reasons)


def test_fork_carrying_the_series_with_defects_absent_stays_green(simulated, tmp_path):
    judged, _ = _findings(tmp_path, simulated["series"], SUITE_WITHOUT_FAILURES)
    _unseen_defects(judged, _table(simulated["series"])[0])
    assert judged.verdict == "green", judged.reasons


def test_accepted_defect_is_green_and_said_first(simulated, tmp_path):
    suite = (
        "import pytest\nfrom lbfgs_gate.defects import DefectObserved\n\n@pytest.mark.defect('seed-leak')\n"
        "def test_leak():\n    raise DefectObserved('NaN')\n"
    )
    judged, (finding,) = _findings(tmp_path, simulated["pristine"], suite, {"seed-leak": "the fork pins 0.2.4"})
    assert judged.verdict == "green" and finding.name == "seed-leak"
    report = Report(
        verdict=judged.verdict,
        fork=_fork_info(simulated["pristine"]),
        run="as is",
        patches=[],
        findings=[finding.__dict__],
        judged=judged,
    )
    text = markdown(report)
    assert text.startswith("# optax fork gate: GATE GREEN\n\n- **accepted, not fixed**: `seed-leak`: the fork pins")


def _fork_info(tree):
    return {
        "source": str(tree),
        "ref": "HEAD",
        "commit": "0" * 40,
        "optax_version": "0.2.4",
        "constraints": "constraints/optax-0.2.4.txt",
        "constraints_exact": True,
    }


def test_markdown_summary_has_verdict_table_and_minimal_example(simulated, tmp_path):
    judged, findings = _findings(tmp_path, simulated["pristine"])
    statuses, _ = _table(simulated["pristine"])
    report = Report(
        verdict=judged.verdict,
        fork=_fork_info(simulated["pristine"]),
        run="as is",
        patches=[s.__dict__ for s in statuses],
        findings=[f.__dict__ for f in findings],
        judged=judged,
    )
    text = markdown(report)
    assert text.startswith("# optax fork gate: GATE RED: ")
    assert "| seed-leak | absent | 2/3 | - | present |" in text
    assert f"| `{P0001}` | applies cleanly |  |" in text
    assert "### seed-leak: " in text
    assert f"git -C {simulated['pristine']} am {PATCHES_DIR / P0001}" in text
    assert "Jacobian is not finite\nreproduce:\n    print(solve(A, b, x0))" in text
    document = report.to_json()
    assert document["session"] == "fork" and document["verdict"] == "red"
    assert document["defects"]["seed-leak"]["reproduced"] == 2


# --- pins for the fork's version -------------------------------------------------------------------


@pytest.mark.parametrize("declared", ["0.2.4", "0.2.9.dev0", "1.0.0"])
def test_base_release_comes_from_the_contents_not_the_version(declared, sdist_dir, tmp_path):
    # A fork of 0.2.4 with patches applied, relabelled: its pins are 0.2.4's whatever it says.
    fork = sdist.unpack(sdist.fetch("0.2.4", sdist_dir), tmp_path / "fork")
    for patch in series.read_series()[:4]:
        series.apply_patch(fork, patch)
    init = fork / "optax" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]+"', f'__version__ = "{declared}"', init.read_text()))
    found = base.base_release(fork, declared, sdist_dir)
    assert found.release == "0.2.4" and found.constraints.name == "optax-0.2.4.txt"
    assert found.lines > 0 and (declared == "0.2.4" or f"declares {declared}" in found.label)


def test_base_release_of_the_newest_sdist_is_itself(sdist_dir, tmp_path):
    fork = sdist.unpack(sdist.fetch("0.2.8", sdist_dir), tmp_path / "fork")
    assert base.base_release(fork, "0.2.8", sdist_dir).lines == 0


def test_fork_environment_does_not_pin_optax_itself(tmp_path):
    pins = tmp_path / "pins.txt"
    pins.write_text("optax==0.2.4\njax==0.4.35\noptax-extra==1.0\n")
    assert environment.fork_constraints(pins, tmp_path / "fork.txt").read_text() == "jax==0.4.35\noptax-extra==1.0\n"


# --- the workflow a fork copies ----------------------------------------------------------------------


def test_reusable_workflow_calls_nothing_but_the_fork_session():
    workflow = (PROJECT_ROOT / ".github" / "workflows" / "optax-fork-gate.yml").read_text()
    assert "\n  workflow_call:\n" in workflow
    # Any line that could run part of the gate, in a `run:` line or a block, is the fork session.
    labels = ("#", "name:", "- name:", "description:")
    code = [line.strip() for line in workflow.splitlines() if not line.strip().startswith(labels)]
    gate_lines = [line for line in code if any(word in line for word in ("nox", "lbfgs_gate", "pytest", "tox"))]
    assert gate_lines, "the workflow runs no gate at all"
    assert all(line.startswith("run: nox -s fork -- ") for line in gate_lines), gate_lines


def test_every_patch_of_the_series_fixes_one_registered_defect_or_adds_an_option():
    # The registry and the series agree: a patch without a defect, or a defect whose patch
    # left the series, would make the tests above pass vacuously. An option fixes no defect
    # and is registered as one (defects.OPTIONS), with its PASS_TO_PASS tests.
    fixed = sorted(d.patch for d in defects.DEFECTS.values() if d.patch)
    assert sorted(SERIES) == sorted(fixed + list(defects.OPTIONS))
    assert not set(fixed) & set(defects.OPTIONS)
    for option in defects.OPTIONS.values():
        assert (PROJECT_ROOT / "lbfgs_gate" / "suite" / option.tests).is_file()


SUITE_OF_A_PARTIAL_FORK = """
import pytest
from lbfgs_gate.defects import DefectObserved

@pytest.mark.defect("reverse-nan")
@pytest.mark.defect("weight-underflow")
def test_needs_0002_and_0005():
    raise DefectObserved("reverse-mode gradient is inf")

@pytest.mark.defect("memory-leak")
def test_memory_alone():
    raise DefectObserved("memory tangent is NaN")
"""


def test_a_detector_of_several_defects_is_not_charged_to_the_one_whose_patch_is_applied(simulated, tmp_path):
    # 0.2.4 with 0001 to 0004: a detector marked reverse-nan and weight-underflow reproduces
    # because 0005 is missing, not 0002; memory-leak's own detector still names it (0003 applied, and broken).
    patches = [p for p in series.read_series() if p.name not in (P0005, P0006, P0007)]
    fork = forks.clone(simulated["pristine"], tmp_path / "partial")
    for patch in patches:
        forks.git(fork, "am", "--quiet", str(patch))
    judged, findings = _findings(tmp_path, fork, SUITE_OF_A_PARTIAL_FORK)
    assert judged.verdict == "red"
    assert {(f.name, f.patch_state) for f in findings} == {("weight-underflow", "applies"), ("memory-leak", "applied")}
