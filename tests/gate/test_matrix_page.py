"""The release matrix: its page is written from the runs' results, and CI runs one job per release (no jax)."""

import json
import re

from lbfgs_gate import PROJECT_ROOT, matrix

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "release-matrix.yml"


def test_the_workflow_runs_one_job_per_release_of_the_matrix():
    text = WORKFLOW.read_text()
    listed = re.search(r"^\s+release: \[(.*)\]$", text, flags=re.M).group(1)
    assert [r.strip().strip('"') for r in listed.split(",")] == matrix.releases()
    # Each job's caches are its release's; the table job builds the page from their results.
    assert "key: matrix-${{ matrix.release }}-" in text and "matrix --table-only" in text


def _result(release, mode, state):
    cell = {"state": state, "detectors": 2, "failed": 2 if state == "present" else 0, "crashed": 0, "errors": []}
    return {"release": release, "jax": "0.4.35", "mode": mode, "defects": {"reverse-nan": cell}, "verdict": "green"}


def test_the_page_is_built_from_the_results_and_says_what_did_not_run(gate, tmp_path):
    folder = gate.work / "matrix"
    for mode, state in (("unpatched", "present"), ("patched", "absent")):
        (folder / mode).mkdir(parents=True)
        (folder / mode / "0.2.4.json").write_text(json.dumps(_result("0.2.4", mode, state)))
    result = gate("matrix", "--table-only")
    assert result.returncode == 0, result.stderr
    published = (folder / "matrix.md").read_text()
    assert "| 0.2.4 | 0.4.35 |" in published and "**present** (2/2 detectors fail)" in published
    assert "| 0.2.8 |" in published and "not run" in published.split("| 0.2.8 |")[1].splitlines()[0]
    assert "absent (0/2)" in (folder / "matrix-patched.md").read_text()
    assert "not run: unpatched 0.2.3" in result.stdout


def test_the_docs_page_holds_both_tables(monkeypatch, tmp_path):
    monkeypatch.setattr(matrix, "matrix_dir", lambda: tmp_path)
    (tmp_path / "matrix.md").write_text("### Defects of each optax release as published\n")
    page = matrix.write_page(tmp_path / "releases.md").read_text()
    assert page.startswith("# Which releases carry which defect") and "Written by `nox -s matrix`" in page
    assert "as published" in page and "matrix-patched: not run yet" in page


def test_where_the_series_does_not_apply_the_cell_comes_from_the_statuses_not_an_error_text(sdist_dir):
    from lbfgs_gate import PATCHES_DIR, pipeline, series

    pristine = pipeline.pristine_tree("0.2.3", sdist_dir)
    statuses = series.series_status(pristine, series.read_series(PATCHES_DIR / "series"), "0.2.3")
    stuck = series.blocking(statuses)
    assert stuck is not None and stuck.patch.startswith("0001") and stuck.state == "conflicts"
    result = {
        "series": "does not apply",
        "reason": "whatever the error said",
        "statuses": [s.__dict__ for s in statuses],
    }
    assert matrix._series_cell(result).startswith("does not apply: 0001 conflicts: optax/_src/transform.py")
