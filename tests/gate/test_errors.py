"""Bad input: a one-line error naming what failed and what to do, a non-zero exit, nothing half-done."""

import os
import shutil
import sys

import pytest

SERIES_OPTIONS = ("session", "patched", "--release", "0.2.4", "--series")


def _one_line_error(result, *fragments):
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def _no_tree_left(work):
    trees = work / "trees"
    assert not trees.exists() or not any(trees.iterdir()), f"left behind: {list(trees.iterdir())}"


def test_series_naming_a_missing_patch(gate, tmp_path):
    series = tmp_path / "series"
    series.write_text("0001-not-there.patch\n")
    result = gate(*SERIES_OPTIONS, str(series))
    _one_line_error(result, "0001-not-there.patch", "not in", "remove its line")
    _no_tree_left(gate.work)


def test_empty_series(gate, tmp_path):
    series = tmp_path / "series"
    series.write_text("# nothing\n")
    _one_line_error(gate(*SERIES_OPTIONS, str(series)), "lists no patch")


def test_patch_that_does_not_apply_leaves_no_tree(gate, tmp_path):
    from lbfgs_gate import series as gate_series

    original = gate_series.read_series()[0]
    broken = tmp_path / original.name
    # Same patch, with a context line that optax 0.2.4 does not have.
    broken.write_text(
        original.read_text().replace(
            "       # capped reciprocal of the gradient norm, see note in the docstring.",
            "       # capped reciprocal of the gradient norm (a line optax never had).",
        )
    )
    assert broken.read_text() != original.read_text()
    (tmp_path / "series").write_text(f"{broken.name}\n")
    result = gate(*SERIES_OPTIONS, str(tmp_path / "series"))
    _one_line_error(result, broken.name, "optax/_src/transform.py, hunk at line", "regenerate")
    _no_tree_left(gate.work)


def test_unknown_release(gate):
    _one_line_error(gate("session", "patched", "--release", "0.1.99"), "0.1.99 is not a known release")


def test_sdist_missing_from_the_local_folder(gate, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = gate("session", "patched", "--release", "0.2.4", env={"LBFGS_GATE_SDIST_DIR": str(empty)})
    _one_line_error(result, "optax-0.2.4.tar.gz not found")
    _no_tree_left(gate.work)


def test_sdist_with_the_wrong_hash(gate, tmp_path):
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "optax-0.2.4.tar.gz").write_bytes(b"not the release")
    result = gate("session", "patched", "--release", "0.2.4", env={"LBFGS_GATE_SDIST_DIR": str(forged)})
    _one_line_error(result, "does not match the sha256")
    _no_tree_left(gate.work)


def test_sdist_that_cannot_be_downloaded(gate, tmp_path):
    # No index and nothing to find locally: pip download fails at once, offline.
    offline = {
        "LBFGS_GATE_SDIST_DIR": "",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp_path),
        "PIP_CONFIG_FILE": os.devnull,
    }
    result = gate("session", "patched", "--release", "0.2.4", env=offline)
    _one_line_error(result, "could not download the optax 0.2.4 sdist", "check the network")
    _no_tree_left(gate.work)
    assert not list((gate.work / "sdists").glob("*.tar.gz"))


def test_missing_git(gate, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(sys.executable, bare / "python")
    result = gate("session", "patched", "--release", "0.2.4", env={"PATH": str(bare)})
    _one_line_error(result, "'git' not found on PATH", "install git")
    _no_tree_left(gate.work)


def test_status_of_a_folder_that_is_not_a_tree(gate, tmp_path):
    result = gate("status", "--tree", str(tmp_path))
    _one_line_error(result, "is not an optax source tree")


def _stand_in(tree_dir, site):
    """A stand-in "installed optax": `tree_dir`'s package, found first on PYTHONPATH."""
    shutil.copytree(tree_dir / "optax", site / "optax")
    return site


def test_installed_optax_that_is_not_the_patched_tree_is_named(sdist_dir, pristine_tree, tmp_path, monkeypatch):
    from lbfgs_gate import PATCHES_DIR, tree

    patched = tree.prepare("0.2.4", PATCHES_DIR / "series", sdist_dir, report=lambda _: None)
    monkeypatch.setenv("PYTHONPATH", str(_stand_in(pristine_tree, tmp_path / "site")))
    # The first file (in order) the series changes: 0007 adds an argument to lbfgs.
    assert tree.difference(patched) == "optax/_src/alias.py"


def test_installed_patched_tree_is_verified(sdist_dir, tmp_path, monkeypatch):
    from lbfgs_gate import PATCHES_DIR, tree

    patched = tree.prepare("0.2.4", PATCHES_DIR / "series", sdist_dir, report=lambda _: None)
    monkeypatch.setenv("PYTHONPATH", str(_stand_in(patched, tmp_path / "site")))
    assert tree.difference(patched) is None
    (tmp_path / "site/optax/_src/transform.py").write_text("# edited\n")
    assert tree.difference(patched) == "optax/_src/transform.py"


@pytest.mark.parametrize(
    "arguments",
    [
        ["-k", "primal"],
        ["lbfgs_gate/suite/test_seed_leak.py"],
        ["-x"],
        ["--deselect", "lbfgs_gate/suite/test_seed_leak.py"],
        ["-m", "not defect"],
        ["-p", "no:lbfgs_gate.record"],
    ],
)
def test_gate_session_refuses_arguments_that_select_tests(gate, arguments):
    result = gate("session", "unpatched", "--", *arguments)
    _one_line_error(result, f"`{arguments[0]}` is not allowed in the unpatched session", "runs every test")
    # Cleared first, before the arguments were checked: empty, no verdict of an earlier run.
    assert not any((gate.work / "reports" / "unpatched").iterdir())


def test_fork_accept_needs_a_known_defect_and_a_reason(gate, tmp_path):
    _one_line_error(gate("fork", str(tmp_path), "--accept", "seed-leek=typo"), "'seed-leek' is not a defect")
    _one_line_error(gate("fork", str(tmp_path), "--accept", "stepsize-leak"), "give the reason")
