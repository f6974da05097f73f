"""The verdict's rules (lbfgs_gate/verdict.py), on small generated suites run by pytest itself.

Each test writes a suite with pytester, runs it with the record plugin as the gate runs
the real one (`-p lbfgs_gate.record`), and judges the record as the unpatched, patched,
fork or matrix session would. No jax: the defects' names are real, the tests are not.
"""

import pytest

from lbfgs_gate import PROJECT_ROOT, defects, verdict

pytest_plugins = ["pytester"]

PATCHABLE = sorted(name for name, d in defects.DEFECTS.items() if d.patch)
LIMITS = sorted(name for name, d in defects.DEFECTS.items() if d.patch is None)
HEADER = "import pytest\nfrom lbfgs_gate.defects import DefectObserved\n\n"

UNPATCHED = verdict.Expectation(present=frozenset(PATCHABLE))
PATCHED = verdict.Expectation()
MATRIX_PUBLISHED = verdict.Expectation(measure=True, detectors_only=True)
MATRIX_PATCHED = verdict.Expectation(detectors_only=True)


def _suite(tests: str) -> str:
    """Every defect gets one detector in `tests` or here: the verdict wants one for each."""
    lines = [HEADER, tests]
    for name in [*PATCHABLE, *LIMITS]:
        if f"defect({name!r})" in tests or f'defect("{name}")' in tests:
            continue
        function = name.replace("-", "_")
        if name in LIMITS:
            lines.append(
                f"\n@pytest.mark.defect({name!r})\ndef test_limit_{function}():\n"
                f"    raise DefectObserved('limit {name}')\n"
            )
        else:
            lines.append(
                f"\n@pytest.mark.defect({name!r})\ndef test_{function}(request):\n"
                f"    if request.config.getoption('--symptoms'):\n"
                f"        raise DefectObserved('{name} seen')\n"
            )
    return "".join(lines)


CONFTEST = """
def pytest_addoption(parser):
    parser.addoption("--symptoms", action="store_true", help="the defects are present")
"""


@pytest.fixture()
def judge(pytester, monkeypatch):
    """Runs a generated suite with the record plugin; returns the verdict for an expectation."""
    pytester.makeconftest(CONFTEST)
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))  # for a pytest in a subprocess

    def run(
        tests: str,
        expectation: verdict.Expectation,
        *args: str,
        symptoms: bool | None = None,
        session: str = "unpatched",
        in_subprocess: bool = False,
    ):
        pytester.makepyfile(test_generated=_suite(tests))
        record = pytester.path / "record.json"
        present = expectation.present or expectation.measure if symptoms is None else symptoms
        options = ["-p", "lbfgs_gate.record", f"--gate-record={record}", "-p", "no:cacheprovider", *args]
        # A test that kills its process, or pytest-xdist's workers, need a pytest of their own.
        run_pytest = pytester.runpytest_subprocess if in_subprocess else pytester.runpytest
        ran = run_pytest(*options, *(["--symptoms"] if present else []))
        return verdict.judge(session, {"suite": verdict.load_record(record, "suite", int(ran.ret))}, expectation)

    return run


SEED_DETECTOR = "@pytest.mark.defect('seed-leak')\ndef test_seed_detector(request):\n"


def test_every_defect_reproduced_is_green_unpatched(judge):
    result = judge("", UNPATCHED)
    assert result.verdict == "green", result.reasons
    assert all(row.outcome == "reproduced" for row in result.defects.values())


def test_no_defect_left_is_green_patched(judge):
    result = judge("", PATCHED, session="patched")
    assert result.verdict == "green", result.reasons
    assert {result.defects[name].outcome for name in PATCHABLE} == {"absent"}


def test_detector_that_passes_is_red_unpatched(judge):
    result = judge(SEED_DETECTOR + "    pass\n", UNPATCHED)
    assert result.verdict == "red"
    assert any("test_seed_detector passed: it no longer detects" in r for r in result.reasons)


def test_defect_observed_is_red_patched_and_present_in_the_matrix(judge):
    detector = SEED_DETECTOR + "    raise DefectObserved('Jacobian is NaN')\n"
    patched = judge(detector, PATCHED, symptoms=False, session="patched")
    assert patched.verdict == "red" and patched.defects["seed-leak"].outcome == "present"
    matrix = judge(detector, MATRIX_PATCHED, symptoms=False, session="matrix")
    assert matrix.verdict == "red" and matrix.defects["seed-leak"].reproduced == 1


@pytest.mark.parametrize("expectation", [UNPATCHED, PATCHED, MATRIX_PUBLISHED], ids=["unpatched", "patched", "matrix"])
def test_plain_assertion_error_is_a_crash_not_a_detection(judge, expectation):
    # A precondition or a helper's assert: an AssertionError, but not the defect's symptom.
    result = judge(SEED_DETECTOR + "    assert False, 'precondition: |g0| > 1'\n", expectation)
    assert result.verdict == "red"
    assert result.defects["seed-leak"].crashed == 1 and result.defects["seed-leak"].reproduced == 0
    assert any("crashed in call (AssertionError: precondition" in r for r in result.reasons)


def test_exception_group_of_symptoms_is_one_reproduction(judge):
    detector = SEED_DETECTOR + ("    raise ExceptionGroup('two sites', [DefectObserved('a'), DefectObserved('b')])\n")
    result = judge(detector, UNPATCHED)
    assert result.verdict == "green", result.reasons


def test_exception_group_with_another_error_is_a_crash(judge):
    detector = SEED_DETECTOR + "    raise ExceptionGroup('two sites', [DefectObserved('a'), TypeError('b')])\n"
    for expectation in (UNPATCHED, MATRIX_PUBLISHED):
        result = judge(detector, expectation)
        assert result.verdict == "red" and result.defects["seed-leak"].crashed == 1


@pytest.mark.parametrize("expectation", [UNPATCHED, PATCHED, MATRIX_PUBLISHED], ids=["unpatched", "patched", "matrix"])
def test_skip_inside_a_detector_is_red(judge, expectation):
    result = judge(SEED_DETECTOR + "    pytest.skip('no device')\n", expectation)
    assert result.verdict == "red"
    assert result.defects["seed-leak"].skipped == 1


@pytest.mark.parametrize("expectation", [UNPATCHED, PATCHED], ids=["unpatched", "patched"])
def test_deselected_detectors_are_red(judge, expectation):
    result = judge("def test_primal_identity():\n    pass\n", expectation, "-k", "primal")
    assert result.verdict == "red"
    assert result.defects["seed-leak"].not_run == 1
    assert any("test_seed_leak not run" in r for r in result.reasons)


def test_collection_error_is_red(judge, pytester):
    pytester.makepyfile(test_broken="import not_a_module\n")
    result = judge("", UNPATCHED)
    assert result.verdict == "red"
    assert any("collection error" in r and "test_broken" in r for r in result.reasons)


@pytest.mark.parametrize("expectation", [UNPATCHED, PATCHED], ids=["unpatched", "patched"])
def test_limit_that_starts_passing_is_red(judge, expectation):
    name = LIMITS[0]
    tests = f"@pytest.mark.defect({name!r})\ndef test_limit_passes():\n    pass\n"
    result = judge(tests, expectation)
    assert result.verdict == "red"
    assert any(f"{name}: " in r and "no longer detects" in r for r in result.reasons)


def test_symptom_in_a_pass_to_pass_test_is_red(judge):
    result = judge("def test_primal_identity():\n    raise DefectObserved('bits differ')\n", PATCHED, session="patched")
    assert result.verdict == "red"
    assert any(r.startswith("PASS_TO_PASS test_generated.py::test_primal_identity reproduced") for r in result.reasons)


def test_weaker_hypothesis_profile_is_red(judge, pytester):
    pytester.makeconftest(
        CONFTEST
        + (
            "from hypothesis import settings\n"
            "settings.register_profile('dev', max_examples=5)\n"
            "settings.load_profile('dev')\n"
        )
    )
    tests = "from hypothesis import given, strategies as st\n\n@given(st.integers())\ndef test_property(x):\n    pass\n"
    result = judge(tests, PATCHED, session="patched")
    assert result.verdict == "red"
    assert any("ran under hypothesis profile 'dev'" in r for r in result.reasons)


def test_ci_profile_property_is_green_and_its_examples_counted(judge, pytester):
    pytester.makeconftest(
        CONFTEST
        + (
            "from hypothesis import settings\n"
            "settings.register_profile('ci', max_examples=200, derandomize=True, report_multiple_bugs=False)\n"
            "settings.load_profile('ci')\n"
        )
    )
    tests = (
        "from hypothesis import assume, given, strategies as st\n\n"
        "@given(st.integers(0, 1000))\ndef test_property(x):\n    assume(x % 10)\n"
    )
    result = judge(tests, PATCHED, session="patched")
    assert result.verdict == "green", result.reasons
    (examples,) = result.examples.values()
    assert examples["valid"] == 200 and examples["invalid"] > 0


def test_accepted_defect_present_is_green_and_said_first(judge):
    accepted = verdict.Expectation(accepted={"stepsize-leak": "upstream prefers 0004 opt-in"})
    tests = (
        "@pytest.mark.defect('stepsize-leak')\ndef test_stepsize():\n    raise DefectObserved('NaN after 15 steps')\n"
    )
    result = judge(tests, accepted, symptoms=False, session="fork")
    assert result.verdict == "green", result.reasons
    assert result.defects["stepsize-leak"].outcome == "accepted, present"
    assert verdict.table(result).splitlines()[0].startswith("ACCEPTED: stepsize-leak")


def test_accepting_one_defect_does_not_silence_another(judge):
    accepted = verdict.Expectation(accepted={"stepsize-leak": "opt-in upstream"})
    result = judge(SEED_DETECTOR + "    raise DefectObserved('NaN')\n", accepted, symptoms=False, session="fork")
    assert result.verdict == "red"
    assert any(r.startswith("seed-leak present") for r in result.reasons)


def test_missing_record_is_red():
    result = verdict.judge("patched", {"suite": verdict.load_record("/nonexistent/record.json", "suite", 0)}, PATCHED)
    assert result.verdict == "red"
    assert any("no test was collected" in r for r in result.reasons)


def test_matrix_on_a_published_release_measures_without_expectation(judge):
    result = judge("", MATRIX_PUBLISHED, symptoms=True, session="matrix")
    assert result.verdict == "green", result.reasons
    assert all(row.reproduced == row.detectors == 1 for row in result.defects.values())


def test_table_ends_with_one_verdict_line(judge):
    green = judge("", UNPATCHED)
    assert verdict.table(green).splitlines()[-1] == "GATE GREEN: unpatched"
    red = judge(SEED_DETECTOR + "    pass\n", UNPATCHED)
    assert verdict.table(red).splitlines()[-1].startswith("GATE RED: unpatched: seed-leak: ")


def test_optax_suite_is_red_on_any_outcome_the_series_changes_and_green_on_its_own_tests_added():
    published = {"_src.a_test.T.test_x": "passed", "_src.a_test.T.test_y": "skipped"}
    added = {**published, "_src.lbfgs_new_test.T.test_z": "passed"}
    assert verdict.optax_suite_differences(published, added, ["_src.lbfgs_new_test"]) == []
    assert verdict.optax_suite_verdict([]) == "green"
    changed = {**added, "_src.a_test.T.test_y": "passed"}
    assert verdict.optax_suite_differences(published, changed, ["_src.lbfgs_new_test"]) == [
        "_src.a_test.T.test_y: skipped as published, passed with the series"
    ]
    lost = {"_src.lbfgs_new_test.T.test_z": "failed"}
    differences = verdict.optax_suite_differences(published, lost, ["_src.lbfgs_new_test"])
    assert len(differences) == 3 and verdict.optax_suite_verdict(differences) == "red"


# --- the limit judged only where the series is compared with the release ---------------------------

COMPARED = sorted(defects.release_comparisons())


def test_a_comparison_with_the_release_is_judged_where_the_series_is_applied(judge):
    """patched, upstream, a fork gated with patches applied: its detectors must reproduce, as a limit's."""
    name = COMPARED[0]
    tests = f"@pytest.mark.defect({name!r})\ndef test_never_worse():\n    pass\n"
    result = judge(tests, PATCHED, session="patched", symptoms=False)
    assert result.verdict == "red"
    assert any(f"{name}: " in r and "no longer detects" in r for r in result.reasons)


def test_a_session_that_applies_nothing_leaves_the_comparison_out_and_judges_everything_else(judge, pytester):
    """unpatched (and a fork gated as it is) run without test_never_worse.py: the limit is not judged,
    and leaving it out silences nothing else (a detector of another defect that passes is red)."""
    only = defects.judged_without_the_release()
    unpatched = verdict.Expectation(present=frozenset(PATCHABLE), only=only)
    tests = "".join(
        f"@pytest.mark.defect({name!r})\ndef test_compared_{i}():\n    raise AssertionError('never run')\n"
        for i, name in enumerate(COMPARED)
    )
    pytester.makepyfile(test_never_worse=HEADER + tests)  # the module, left out by name
    green = judge("", unpatched, "--ignore=test_never_worse.py")
    assert green.verdict == "green", green.reasons
    assert all(green.defects[name].expected == "not judged" for name in COMPARED)
    assert "not judged" not in {green.defects[name].expected for name in only}
    red = judge("", unpatched, "--ignore=test_never_worse.py", symptoms=False)
    assert red.verdict == "red" and any("no longer detects" in r for r in red.reasons)


def test_the_comparisons_detectors_live_in_the_module_sessions_leave_out_and_nothing_else_does():
    """What unpatched leaves out by name (runner.NEVER_WORSE_TEST) holds no detector of a defect the
    series fixes, and every detector of a comparison with the release is there: so leaving the
    module out never hides a defect, and not judging the limit never skips a detector that ran."""
    from lbfgs_gate import inventory, runner

    tests = inventory.expected()
    module = {k: v for k, v in tests.items() if k.startswith(f"{runner.NEVER_WORSE_TEST}::")}
    assert module, f"{runner.NEVER_WORSE_TEST} is not in the inventory"
    for nodeid, names in module.items():
        assert all(defects.DEFECTS[name].patch is None for name in names), f"{nodeid}: {names}"
    for nodeid, names in tests.items():
        if set(names) & set(COMPARED):
            assert nodeid in module, f"{nodeid} detects {names} outside {runner.NEVER_WORSE_TEST}"
