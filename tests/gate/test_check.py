"""`lbfgs-gate check` and `lbfgs-gate patches`: their detectors, advice and bad input (no jax)."""

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lbfgs_gate import (
    PACKAGE_DIR,
    PROJECT_ROOT,
    GateError,
    base_release,
    check,
    defects,
    inventory,
    matrix,
    pipeline,
    release_comparison,
    run_record,
    sdist,
    series,
)
from lbfgs_gate.suite import corpus
from tests.gate.conftest import git, make_repository

PATCHABLE = {name for name, d in defects.DEFECTS.items() if d.patch}


def _given(nodeid: str) -> bool:
    """Whether the test function of a node id is a hypothesis property (decorated with @given)."""
    file, _, name = nodeid.partition("::")
    function = name.split("[")[0]
    tree = ast.parse((PROJECT_ROOT / file).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return any("given" in ast.unparse(d) for d in node.decorator_list)
    raise AssertionError(f"{nodeid}: no such test function")


def test_the_quick_detectors_are_plain_tests_of_each_defect_the_series_fixes():
    expected = inventory.expected()
    assert set(check.QUICK) == PATCHABLE
    for name, nodeids in check.QUICK.items():
        assert isinstance(nodeids, tuple) and nodeids, f"{name}: no quick detector"
        for nodeid in nodeids:
            assert expected.get(nodeid) == [name], f"{nodeid} is not in the inventory marked [{name!r}] alone"
            assert not _given(nodeid), f"{nodeid} is a hypothesis property: the quick check runs plain tests"
    assert len(set(check.QUICK_NODES)) == len(check.QUICK_NODES) == sum(map(len, check.QUICK.values()))
    assert set(check.MEANWHILE) == PATCHABLE


@pytest.mark.parametrize(("release", "first"), [("0.2.4", "0001"), ("0.2.8", "0002"), ("0.2.8.dev0", "0002")])
def test_the_patches_for_a_release_leave_out_what_is_upstream_and_take_its_variants(release, first):
    files = check.patches_for(check.release_of(release))
    assert files[0].name.startswith(first)
    assert [f.name for f in files] == [p.name for p in series.read_series() if p.name[:4] >= first]
    if release == "0.2.8":
        assert {f.parent.name for f in files} == {"0.2.8", "patches"}  # its variants, where there are some
    only = check.patches_for("0.2.4", {"memory-leak"})
    assert [f.name[:4] for f in only] == ["0003"]


def test_a_release_the_series_was_not_checked_on_asks_for_the_checkout():
    with pytest.raises(GateError, match="--tree PATH/TO/optax"):
        check.patches_for("0.2.9")
    with pytest.raises(GateError, match="0.2.3 is not a release the series was checked on"):
        check.patches_for("0.2.3")


@pytest.mark.parametrize("release", series.checked_releases())
def test_each_checked_release_takes_the_files_the_variant_table_names(release, sdist_dir, tmp_path):
    # What `lbfgs-gate patches --release R` prints without a tree is what applies to R's sdist.
    tree = sdist.unpack(sdist.fetch(release, sdist_dir), tmp_path / release)
    assert series.blocking(series.series_status(tree, series.read_series(), release)) is None
    printed = check.patches_for(release)
    applied = [s.source for s in series.series_status(tree, series.read_series(), release) if s.state == "applies"]
    assert [str(p.relative_to(PACKAGE_DIR / "patches")) for p in printed] == applied


def test_the_checked_releases_are_the_matrix_from_the_base_release_on():
    base = series.version_tuple(base_release())
    assert series.checked_releases() == [r for r in matrix.releases() if series.version_tuple(r) >= base]


def test_a_checkout_of_a_development_version_takes_the_newest_release_row():
    listed = series.read_series()
    assert series.file_for(listed[1], "0.2.9.dev0") == series.file_for(listed[1], "0.2.8") != listed[1]
    assert series.file_for(listed[1], "0.2.4") == listed[1]


def test_patches_for_a_checkout_are_those_it_lacks(pristine_tree):
    for patch in series.read_series()[:3]:
        series.apply_patch(pristine_tree, patch)
    files = check.patches_for("0.2.4", tree=pristine_tree)
    assert [f.name for f in files] == [p.name for p in series.read_series()[3:]]


def test_the_printed_series_is_what_git_am_takes_on_a_checkout_of_the_release(pristine_tree):
    make_repository(pristine_tree)
    printed = subprocess.run(
        [sys.executable, "-m", "lbfgs_gate", "patches", "--release", "0.2.4", "--print"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "am", "-q"],
        cwd=pristine_tree,
        input=printed,
        check=True,
    )
    log = git(pristine_tree, "log", "--format=%s").stdout.splitlines()
    assert len(log) == 1 + len(series.read_series())


def _check(gate, *args, env=None):
    return gate("check", *args, env=env)


def test_check_without_optax_is_bad_input_in_one_line_and_leaves_no_verdict(gate, tmp_path):
    # The gate's own test environment has no optax: the check has nothing to judge.
    stale = tmp_path / "verdict.json"
    stale.write_text('{"session": "check", "verdict": "green"}')
    result = _check(gate, "--json", str(stale))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "optax is not installed" in result.stderr and "run lbfgs-gate from the environment" in result.stderr
    assert not stale.exists()


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("--", "-k", "seed"), None, "`-k` is not allowed"),
        ((), {"JAX_ENABLE_X64": "1"}, "JAX_ENABLE_X64"),
        ((), {"PYTEST_ADDOPTS": "--deselect x"}, "PYTEST_ADDOPTS"),
    ],
)
def test_check_refuses_what_would_change_what_runs(gate, args, env, says):
    result = _check(gate, *args, env=env)
    assert result.returncode == 2 and says in result.stderr and result.stderr.count("\n") == 1
    assert not (gate.work / "reports" / "check" / "verdict.json").exists()


def test_an_optax_too_old_or_unreadable_is_bad_input(monkeypatch):
    versions = {"optax": "0.1.7", "jax": "0.4.35", "jaxlib": "0.4.35"}
    monkeypatch.setattr(check, "_version", versions.get)
    with pytest.raises(check.GateError, match=r"optax 0\.1\.7 is older than 0\.2\.3"):
        check.installed_versions()
    versions["optax"] = None
    with pytest.raises(check.GateError, match="optax is not installed"):
        check.installed_versions()


def test_the_package_declares_its_command_plugin_and_no_optax_or_jax():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "lbfgs-gate"
    assert project["project"]["scripts"] == {"lbfgs-gate": "lbfgs_gate.__main__:main"}
    # Named as the module the gate loads by name: never registered twice.
    assert project["project"]["entry-points"]["pytest11"] == {"lbfgs_gate.plugin": "lbfgs_gate.plugin"}
    names = {dependency.split(">")[0].split("=")[0].split("[")[0] for dependency in project["project"]["dependencies"]}
    assert not names & {"optax", "jax", "jaxlib"}
    # What the check needs ships inside the package: detectors, inventory, series.
    assert (PACKAGE_DIR / "suite" / "inventory.json").is_file() and (PACKAGE_DIR / "suite" / "pytest.ini").is_file()
    assert (PACKAGE_DIR / "patches" / "series").is_file()
    assert json.loads((PACKAGE_DIR / "suite" / "inventory.json").read_text())["tests"]


def test_the_optax_judged_is_the_one_import_optax_gives_where_the_check_runs(tmp_path, monkeypatch):
    for folder in ("installed", "checkout"):
        (tmp_path / folder / "optax").mkdir(parents=True)
        (tmp_path / folder / "optax" / "__init__.py").write_text("")
    installed = {**os.environ, "PYTHONPATH": str(tmp_path / "installed")}
    assert check.optax_imported(tmp_path, installed) == tmp_path / "installed" / "optax"
    # A folder holding its own optax/ shadows the installed one for whoever runs Python there.
    assert check.optax_imported(tmp_path / "checkout", installed) == tmp_path / "checkout" / "optax"
    monkeypatch.chdir(tmp_path / "checkout")
    where = {Path.cwd(): tmp_path / "checkout" / "optax", PROJECT_ROOT: tmp_path / "installed" / "optax"}
    monkeypatch.setattr(check, "optax_imported", lambda cwd, env=None: where[cwd])
    with pytest.raises(GateError, match=r"gives .*checkout/optax, but the check would judge .*installed/optax"):
        check.judged_optax()
    where[Path.cwd()] = where[PROJECT_ROOT]
    assert check.judged_optax() == tmp_path / "installed" / "optax"


# --- the comparison with the release as published (test_never_worse.py in the check) -----------------


def test_the_quick_comparison_measures_one_loop_of_each_class_the_suite_holds():
    expected = inventory.expected()
    assert len(check.QUICK_COMPARISON) == len(corpus.QUICK) == len(set(corpus.QUICK))
    for nodeid in check.QUICK_COMPARISON:
        assert expected.get(nodeid) in ([], ["derivative-short-of-release"]), f"{nodeid} is not in the inventory"
    # Both sides of the rule are in the quick set: loops where the series is known short, and loops
    # where it must be within the bound (PASS_TO_PASS: red when a fork is worse than the release there).
    assert {tuple(expected[n]) for n in check.QUICK_COMPARISON} == {(), ("derivative-short-of-release",)}


def test_the_sdist_hashes_ship_in_the_package_and_the_clone_links_to_them():
    assert sdist.SDIST_HASHES == PACKAGE_DIR / "sdists.txt" and sdist.SDIST_HASHES.is_file()
    assert (PROJECT_ROOT / "constraints" / "sdists.txt").resolve() == sdist.SDIST_HASHES.resolve()


def test_the_comparison_is_with_the_release_the_optax_reports_and_not_with_itself(monkeypatch, tmp_path):
    recorded = {}

    def derivatives(tree, state, only=()):
        recorded.update(tree=tree, only=only)
        return tmp_path / "derivatives.json"

    monkeypatch.setattr(check.pipeline, "pristine_tree", lambda release: tmp_path / f"optax-{release}")
    monkeypatch.setattr(check.pipeline, "release_derivatives", derivatives)
    monkeypatch.setattr(check.pipeline, "release_derivatives_side_by_side", derivatives)
    monkeypatch.setattr(check.pipeline, "release_package", lambda tree: tmp_path / "package")
    unknown = check.release_to_compare("0.2.9.dev0", thorough=False)
    assert not unknown.records and "no published sdist of optax 0.2.9" in unknown.why_not
    monkeypatch.setattr(check.tree, "difference", lambda tree: None)
    itself = check.release_to_compare("0.2.8", thorough=False)
    assert not itself.records and "0.2.8 as published, file for file" in itself.why_not
    assert not recorded, "nothing is recorded where nothing is compared"
    monkeypatch.setattr(check.tree, "difference", lambda tree: "optax/_src/transform.py")
    quick = check.release_to_compare("0.2.8", thorough=False)
    assert recorded == {"tree": tmp_path / "optax-0.2.8", "only": corpus.QUICK}
    assert quick.records == {
        corpus.VARIABLE: str(tmp_path / "derivatives.json"),
        corpus.PACKAGE_VARIABLE: str(tmp_path / "package"),
    }
    check.release_to_compare("0.2.8", thorough=True)
    assert recorded["only"] == (), "--thorough records the whole corpus"


def test_a_record_made_side_by_side_holds_every_measurement_once(monkeypatch, tmp_path):
    def derivatives(tree, state, only=()):
        path = tmp_path / f"part-{len(only)}-{only[0][0]}.json"
        path.write_text(json.dumps({"optax": "0.2.8", "records": [{"workload": n, "dtype": d} for n, d in only]}))
        return path

    monkeypatch.setattr(pipeline, "release_derivatives", derivatives)
    merged = pipeline.release_derivatives_side_by_side(tmp_path / "tree", only=corpus.QUICK, state="as published")
    records = json.loads(merged.read_text())["records"]
    assert sorted((r["workload"], r["dtype"]) for r in records) == sorted(corpus.QUICK)


def test_the_comparison_prints_both_errors_of_each_loop_that_falls_short():
    short = release_comparison.node("multi_output_3x8_run_opt", "float64")
    within = release_comparison.node("notebook_1000_steps_jacrev", "float32")
    broken = release_comparison.node("complex_5d_run_opt", "float64")
    tests = {
        short: run_record.TestRecord(
            short,
            ["derivative-short-of-release"],
            run_record.Outcome.REPRODUCED,
            report="multi-output (float64): relative error 0.0122 with the series (optax 0.2.8 (jax 0.10.2) "
            "from /x), 1.76e-12 as published: the bound is 1e-06 (min(max(10 x published, 1e-06), 0.001))",
        ),
        within: run_record.TestRecord(within, [], run_record.Outcome.PASSED),
        broken: run_record.TestRecord(broken, [], run_record.Outcome.CRASHED, message="RuntimeError: raised"),
    }
    record = run_record.Record()
    record.tests.update(tests)
    lines = check.comparison_lines(check.Comparison("0.2.8", {"x": "y"}), {"suite": record})
    assert "1 of 3 within the bound" in lines[0]
    row = next(line for line in lines if "multi_output_3x8_run_opt" in line).split()
    assert row[1:5] == ["float64", "0.0122", "1.76e-12", "1e-06"] and "SHORT" in row
    assert "within the bound" in next(line for line in lines if "notebook_1000" in line)
    assert "crashed: RuntimeError: raised" in next(line for line in lines if "complex_5d" in line)
    assert "residual check" in lines[-1]
    nothing = check.comparison_lines(check.Comparison("0.2.8", {}, "why"), {"suite": record})
    assert nothing == ["derivatives against the release as published: not compared (why)"]
