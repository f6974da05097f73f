"""Each way the verdict was once fooled, tried again: every one must turn it red (or be refused).

Generated suites run by pytest itself (pytester), as in test_verdict.py; the runner's
own bounds and environment are tried through lbfgs_gate.runner.
"""

import pytest

from lbfgs_gate import GateError, run_record, runner, verdict
from lbfgs_gate.run_record import Outcome, Record
from tests.gate import test_verdict
from tests.gate.test_verdict import CONFTEST, PATCHED, SEED_DETECTOR, UNPATCHED

judge = test_verdict.judge  # the generated-suite fixture, shared

pytest_plugins = ["pytester"]

XDIST = ("-n", "2", "--dist", "loadgroup", "--max-worker-restart=0")
# One more test after the detector, in its group: the worker's death must not hide it either.
GROUPED = (
    "@pytest.mark.xdist_group('solves')\n" + SEED_DETECTOR + "    {body}\n\n"
    "@pytest.mark.xdist_group('solves')\ndef test_after_the_detector():\n    pass\n"
)


# --- 1. a test whose call never reports is not passed -------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["import os; os._exit(0)", "import os; os.abort()", "import ctypes; ctypes.string_at(0)"],
    ids=["exit-0", "abort", "segfault"],
)
@pytest.mark.parametrize("expectation", [UNPATCHED, PATCHED], ids=["unpatched", "patched"])
def test_worker_that_dies_in_a_detector_is_red(judge, body, expectation):
    result = judge(GROUPED.format(body=body), expectation, *XDIST, in_subprocess=True)
    assert result.verdict == "red"
    assert result.defects["seed-leak"].passed == 0 and result.defects["seed-leak"].crashed == 1
    assert any("test_seed_detector" in r and "died" in r for r in result.reasons), result.reasons


@pytest.mark.parametrize(
    "body", ["import os; os._exit(0)", "raise KeyboardInterrupt", "pytest.exit('stop', returncode=0)"]
)
def test_run_that_stops_in_the_last_detector_is_red(judge, body):
    # The detector is the last test: nothing after it can show that the run stopped.
    tests = SEED_DETECTOR + f"    {body}\n"
    result = judge(tests.replace("def test_seed_detector", "def test_zz_seed_detector"), PATCHED, in_subprocess=True)
    assert result.verdict == "red"
    assert result.defects["seed-leak"].passed == 0


def _one_passed(**run) -> Record:
    test = run_record.TestRecord("t::a", outcome=Outcome.PASSED)
    return Record(inventory={"t::a": []}, tests={"t::a": test}, **run)


def test_interrupted_exit_status_is_red_whatever_the_record_says():
    record = _one_passed(exitstatus=2)
    result = verdict.judge("patched", {"suite": record}, verdict.Expectation())
    assert result.verdict == "red"
    assert any("exited with status 2 (interrupted)" in r for r in result.reasons)


def test_record_without_exit_status_is_red():
    assert verdict.judge("patched", {"suite": _one_passed()}, verdict.Expectation()).verdict == "red"


def test_passed_needs_every_phase_reported():
    phases = {"setup": Outcome.PASSED, "call": Outcome.PASSED}
    test = run_record.TestRecord("t::a", phases=phases)
    record = run_record.finish(Record(inventory={"t::a": []}, tests={"t::a": test}))
    assert record.tests["t::a"].outcome == Outcome.CRASHED
    assert "teardown never reported" in record.tests["t::a"].message


# --- 2. bounded time ---------------------------------------------------------------------------------


def _runner_suite(tmp_path, body):
    (tmp_path / "test_slow.py").write_text(
        "import time\n\ndef test_first():\n    pass\n\ndef test_hangs():\n" + f"    {body}\n"
    )


def test_test_that_hangs_is_a_crash_named_in_the_record(tmp_path):
    _runner_suite(tmp_path, "time.sleep(60)")
    record = runner.run(
        ["test_slow.py"], reports=tmp_path / "reports", name="suite", patch_state="t", cwd=tmp_path, test_timeout=2
    )
    assert record.tests["test_slow.py::test_hangs"].outcome == Outcome.CRASHED
    result = verdict.judge("patched", {"suite": record}, verdict.Expectation())
    assert result.verdict == "red"
    assert any("test_hangs" in r for r in result.reasons)


def test_run_past_its_time_bound_is_killed_red_naming_the_running_test(tmp_path):
    _runner_suite(tmp_path, "time.sleep(60)")
    record = runner.run(
        ["test_slow.py"],
        reports=tmp_path / "reports",
        name="suite",
        patch_state="t",
        cwd=tmp_path,
        time_bound=8,
        test_timeout=120,
    )
    assert record.timed_out == 8 and record.running == ["test_slow.py::test_hangs"]
    result = verdict.judge("patched", {"suite": record}, verdict.Expectation())
    assert result.verdict == "red"
    assert "time bound of 8 s" in result.reasons[0] and "test_slow.py::test_hangs" in result.reasons[0]


# --- 3. the collected set cannot shrink, and the environment cannot change what runs ------------


def test_test_missing_from_the_inventory_is_red(judge):
    inventory = {"test_generated.py::test_primal_identity": []}
    result = judge("", verdict.Expectation(inventory=inventory), session="patched", symptoms=False)
    assert result.verdict == "red"
    assert any("collected that the inventory does not list" in r for r in result.reasons)
    assert any("not collected" in r and "test_primal_identity" in r for r in result.reasons)


def test_ignored_file_is_red_against_the_inventory(judge, pytester):
    pytester.makepyfile(test_primal="def test_primal_identity():\n    pass\n")
    first = judge("", PATCHED, session="patched", symptoms=False)
    assert first.verdict == "green", first.reasons
    inventory = run_record.load(pytester.path / "record.json").inventory
    ignored = judge("", verdict.Expectation(inventory=inventory), "--ignore=test_primal.py", symptoms=False)
    assert ignored.verdict == "red"
    assert any("test_primal.py::test_primal_identity" in r and "not collected" in r for r in ignored.reasons)


def test_marker_changed_is_red(judge, pytester):
    first = judge("", PATCHED, session="patched", symptoms=False)
    record = verdict.load_record(pytester.path / "record.json", "suite", 0)
    inventory = dict(record.inventory)
    nodeid = next(k for k, v in inventory.items() if v == ["seed-leak"])
    inventory[nodeid] = ["memory-leak"]
    result = verdict.judge("patched", {"suite": record}, verdict.Expectation(inventory=inventory))
    assert first.verdict == "green" and result.verdict == "red"
    assert any("is marked ['seed-leak'], the inventory says ['memory-leak']" in r for r in result.reasons)


@pytest.mark.parametrize(
    "name", ["PYTEST_ADDOPTS", "PYTEST_PLUGINS", "HYPOTHESIS_PROFILE", "JAX_ENABLE_X64", "XLA_FLAGS", "PYTHONPATH"]
)
def test_environment_that_changes_the_run_is_refused(name):
    with pytest.raises(GateError, match=f"{name} is set: .*unset it"):
        runner.check_environment("patched", {"PATH": "/bin", name: "--ignore=lbfgs_gate/suite/test_primal_identity.py"})


def test_environment_is_an_allowlist(monkeypatch):
    monkeypatch.setenv("SOME_PLUGIN_SETTING", "1")
    env = runner.environment("state")
    assert "SOME_PLUGIN_SETTING" not in env
    assert env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] == "1" and env["HYPOTHESIS_PROFILE"] == verdict.PROFILE


def test_session_refuses_pytest_addopts_and_clears_its_reports(gate):
    planted = gate.work / "reports" / "patched" / "verdict.json"
    planted.parent.mkdir(parents=True)
    planted.write_text('{"verdict": "green"}')
    result = gate("session", "patched", env={"PYTEST_ADDOPTS": "--ignore=lbfgs_gate/suite/test_primal_identity.py"})
    assert result.returncode == 2 and "PYTEST_ADDOPTS is set" in result.stderr
    assert not planted.exists()


# --- 4. the search cannot be switched off ----------------------------------------------------------

CI_PROFILE = (
    "from hypothesis import settings\n"
    "settings.register_profile('ci', max_examples=200, derandomize=True, report_multiple_bugs=False)\n"
    "settings.load_profile('ci')\n"
)


def test_property_without_its_generate_phase_is_red(judge, pytester):
    pytester.makeconftest(CONFTEST + CI_PROFILE)
    tests = (
        "from hypothesis import Phase, example, given, settings, strategies as st\n\n"
        "@settings(phases=[Phase.explicit])\n@given(st.integers())\n@example(1)\ndef test_property(x):\n    pass\n"
    )
    result = judge(tests, PATCHED, session="patched")
    assert result.verdict == "red"
    assert any("without its generate phase" in r for r in result.reasons)


def test_property_whose_assume_discards_most_is_red(judge, pytester):
    pytester.makeconftest(CONFTEST + CI_PROFILE)
    tests = (
        "from hypothesis import HealthCheck, assume, given, settings, strategies as st\n\n"
        "@settings(suppress_health_check=list(HealthCheck))\n"
        "@given(st.integers(0, 10**6))\ndef test_property(x):\n    assume(x % 3 == 0)\n"
    )
    result = judge(tests, PATCHED, session="patched")
    assert result.verdict == "red"
    assert any("discarded" in r and "at most 25%" in r for r in result.reasons), result.reasons


# --- 5. --accept is exact ----------------------------------------------------------------------------


def test_accepting_one_marker_of_a_detector_does_not_accept_the_other(judge):
    accepted = verdict.Expectation(accepted={"memory-leak": "opt-in upstream"})
    tests = (
        "@pytest.mark.defect('memory-leak')\n@pytest.mark.defect('stepsize-leak')\n"
        "def test_both():\n    raise DefectObserved('NaN')\n"
    )
    result = judge(tests, accepted, symptoms=False, session="fork")
    assert result.verdict == "red"
    assert any("stepsize-leak" in r and "present: test_generated.py::test_both" in r for r in result.reasons)


# --- 6. no stale verdict survives an exit-2 run ------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("session", "patched", "--", "-k", "primal"),
        ("session", "unpatched", "--", "-x"),
        ("fork", "DIR", "--accept", "bogus=x"),
        ("fork", "DIR", "--", "-x"),
    ],
)
def test_bad_input_leaves_no_verdict_behind(gate, tmp_path, args):
    args = tuple(str(tmp_path) if a == "DIR" else a for a in args)
    folder = gate.work / ("fork" if args[0] == "fork" else f"reports/{args[1]}")
    folder.mkdir(parents=True)
    (folder / "verdict.json").write_text('{"verdict": "green"}')
    result = gate(*args)
    assert result.returncode == 2, result.stderr
    assert not (folder / "verdict.json").exists()


def test_patch_that_no_longer_applies_leaves_no_verdict_behind(gate, tmp_path):
    from lbfgs_gate import series

    original = series.read_series()[0]
    broken = tmp_path / original.name
    broken.write_text(original.read_text().replace("capped reciprocal of the gradient norm", "a line never seen"))
    (tmp_path / "series").write_text(f"{broken.name}\n")
    planted = gate.work / "reports" / "patched" / "verdict.json"
    planted.parent.mkdir(parents=True)
    planted.write_text('{"verdict": "green"}')
    result = gate("session", "patched", "--release", "0.2.4", "--series", str(tmp_path / "series"))
    assert result.returncode == 2 and not planted.exists()


# --- 9. smaller ---------------------------------------------------------------------------------------


def test_tampered_pristine_tree_is_unpacked_again(sdist_dir):
    from lbfgs_gate import pipeline

    first = pipeline.pristine_tree("0.2.4", sdist_dir)
    transform = first / "optax" / "_src" / "transform.py"
    published = transform.read_bytes()
    transform.write_text("# planted\n")
    again = pipeline.pristine_tree("0.2.4", sdist_dir)
    assert again == first and transform.read_bytes() == published


def test_tampered_patched_tree_is_built_again(sdist_dir):
    from lbfgs_gate import PATCHES_DIR, tree

    built = tree.prepare("0.2.4", PATCHES_DIR / "series", sdist_dir, report=lambda _: None)
    transform = built / "optax" / "_src" / "transform.py"
    patched = transform.read_bytes()
    transform.write_bytes(patched.replace(b"jax.lax.stop_gradient", b"(lambda x: x)"))
    assert transform.read_bytes() != patched  # the tampering took
    again = tree.prepare("0.2.4", PATCHES_DIR / "series", sdist_dir, report=lambda _: None)
    assert again == built and transform.read_bytes() == patched


def test_matrix_refuses_selecting_arguments_and_clears_its_result(gate):
    planted = gate.work / "matrix" / "patched" / "0.2.4.json"
    planted.parent.mkdir(parents=True)
    planted.write_text('{"verdict": "green"}')
    result = gate("matrix", "--release", "0.2.4", "--patched", "--", "-k", "seed")
    assert result.returncode == 2 and "`-k` is not allowed in the matrix session" in result.stderr
    assert not planted.exists()


def test_matrix_with_the_series_is_red_where_it_does_not_apply(monkeypatch, tmp_path):
    from lbfgs_gate import matrix

    monkeypatch.setattr(matrix, "matrix_dir", lambda: tmp_path)
    (tmp_path / "patched").mkdir()
    (tmp_path / "patched" / "0.2.3.json").write_text('{"series": "does not apply", "reason": "0001 conflicts"}')
    assert matrix.problems("patched", "0.2.3") == ["the series does not apply to optax 0.2.3: 0001 conflicts"]


def test_optax_tests_of_one_name_do_not_overwrite_each_other(tmp_path):
    tree = tmp_path / "tree"
    for folder in ("optax/_src", "optax/contrib"):
        (tree / folder).mkdir(parents=True)
        (tree / folder / "same_test.py").write_text(f"WHERE = {folder!r}\n")
    folder = tmp_path / "copies"
    targets = runner.copy_optax_tests(["optax/_src/same_test.py", "optax/contrib/same_test.py::Case"], tree, folder)
    assert len(set(targets)) == 2
    assert (folder / "optax/contrib/same_test.py").read_text() == "WHERE = 'optax/contrib'\n"


# --- every hunk load-bearing: one defect judged on a stage of the series ---------------------------


STAGE_TESTS = (
    "@pytest.mark.defect('stepsize-leak')\n@pytest.mark.defect('memory-leak')\n"
    "def test_both(request):\n"
    "    if request.config.getoption('--symptoms'):\n        raise DefectObserved('stepsize seen')\n"
    "\n@pytest.mark.defect('memory-leak')\ndef test_memory_alone():\n    raise DefectObserved('memory seen')\n"
)


def test_a_stage_judges_its_defect_alone_and_still_every_rule(judge):
    only = verdict.Expectation(only=frozenset({"stepsize-leak"}))
    # Intact: the stage's defect absent; another defect's symptoms are not judged, nor a missing limit.
    intact = judge(STAGE_TESTS, only, symptoms=False, session="hunk_proof")
    assert intact.verdict == "green", intact.reasons
    assert intact.defects["memory-leak"].outcome == "not judged" and intact.defects["stepsize-leak"].outcome == "absent"
    # A hunk reversed: the stage's defect reproduced is red, and named.
    reversed_hunk = judge(STAGE_TESTS, only, symptoms=True, session="hunk_proof")
    assert reversed_hunk.verdict == "red" and reversed_hunk.defects["stepsize-leak"].outcome == "present"
    assert any("stepsize-leak present: test_generated.py::test_both" in r for r in reversed_hunk.reasons)
    # The stage's detector skipped is no detection, as everywhere.
    skipped = judge(STAGE_TESTS.replace("def test_both", "@pytest.mark.skip\ndef test_both"), only, symptoms=False)
    assert skipped.verdict == "red" and any("not a detection" in r for r in skipped.reasons)


def test_optax_tests_are_named_by_their_file_with_the_reports_outside_the_project(tmp_path):
    # pytest names a test file outside its rootdir `::Class::test`: with LBFGS_GATE_WORK_DIR
    # outside the clone, the copies must still lie below the project (and go after the run).
    tree = tmp_path / "tree"
    (tree / "optax/_src").mkdir(parents=True)
    (tree / "optax/_src/lone_test.py").write_text(
        "import unittest\n\nclass LoneTest(unittest.TestCase):\n    def test_passes(self):\n        pass\n"
    )
    reports = tmp_path / "reports" / "elsewhere"
    records = runner.run_with_optax_tests(
        [], ["optax/_src/lone_test.py::LoneTest"], tree, reports=reports, patch_state="patched", defect_modules={}
    )
    names = [nodeid.split("/", 1)[1] for nodeid in records["optax"].tests]
    assert names == ["optax/_src/lone_test.py::LoneTest::test_passes"]
    assert not records["suite"].tests
    assert not list(runner.PROJECT_ROOT.glob(".optax-tests-*"))
