"""The patch series: its format, and that every tool a user may pick takes it."""

import filecmp
import subprocess

import pytest

from lbfgs_gate import PATCHES_DIR, GateError, pipeline, series, tree
from tests.gate.conftest import git, make_repository

PATCHES = series.read_series()


def _patched_by(tool, tree_dir):
    for patch in PATCHES:
        if tool == "git am":
            git(tree_dir, "am", "-q", str(patch))
        elif tool == "git apply":
            git(tree_dir, "apply", str(patch))
        else:
            subprocess.run(["patch", "-p1", "-s", "-i", str(patch)], cwd=tree_dir, check=True)
    return tree_dir


@pytest.mark.parametrize("tool", ["git am", "git apply", "patch -p1"])
def test_series_applies_with_each_tool_and_gives_the_same_tree(tool, pristine_tree, sdist_dir, require_program):
    require_program(tool.split()[0])
    if tool.startswith("git"):
        make_repository(pristine_tree)
    patched = _patched_by(tool, pristine_tree)
    reference = tree.prepare("0.2.4", PATCHES_DIR / "series", sdist_dir, report=lambda _: None)
    for relative in tree.touched_files(PATCHES_DIR / "series"):
        assert filecmp.cmp(patched / relative, reference / relative, shallow=False), relative


def test_git_am_keeps_each_patch_as_one_commit_with_its_message(pristine_tree):
    make_repository(pristine_tree)
    _patched_by("git am", pristine_tree)
    log = git(pristine_tree, "log", "--format=%s", f"-{len(PATCHES)}").stdout.splitlines()
    assert list(reversed(log)) == [series.read_patch(p).subject for p in PATCHES]


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name[:4])
def test_each_patch_has_a_dep3_header(patch):
    info = series.read_patch(patch)
    assert info.subject, f"{patch.name}: no subject"
    # DEP-3: Bug: is a URL; a patch not reported upstream says Forwarded: no and has no Bug: line.
    if info.trailers.get("Forwarded") == "no":
        assert "Bug" not in info.trailers, f"{patch.name}: Forwarded: no, yet a Bug: line"
    else:
        assert info.trailers.get("Bug", "").startswith("https://"), f"{patch.name}: Bug: is not a URL"
    assert "Origin" in info.trailers or "Forwarded" in info.trailers, f"{patch.name}: no Origin:/Forwarded:"
    assert "Applied-Upstream" in info.trailers or info.trailers.get("Forwarded") in ("no", "yes"), (
        f"{patch.name}: says neither Applied-Upstream: nor Forwarded:"
    )


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name[:4])
def test_each_patch_adds_an_optax_style_regression_test(patch):
    added = [f for f in series.read_patch(patch).files if f.endswith("_test.py")]
    assert added, f"{patch.name} adds no test module to optax"
    assert "new file mode" in patch.read_text(), f"{patch.name} must add its own test module"


def test_status_is_applies_on_the_release_and_applied_after_git_am(pristine_tree):
    # 0005 changes a line 0002 changed: each patch is seen as the series stacks it.
    states = [s.state for s in series.series_status(pristine_tree, PATCHES, "0.2.4")]
    assert states == ["applies"] * len(PATCHES)
    make_repository(pristine_tree)
    _patched_by("git am", pristine_tree)
    states = [s.state for s in series.series_status(pristine_tree, PATCHES, "0.2.4")]
    assert states == ["applied"] * len(PATCHES)


def test_status_of_a_tree_carrying_part_of_the_series(pristine_tree):
    make_repository(pristine_tree)
    git(pristine_tree, "am", "-q", str(PATCHES[0]), str(PATCHES[1]))
    states = [s.state for s in series.series_status(pristine_tree, PATCHES, "0.2.4")]
    assert states == ["applied", "applied"] + ["applies"] * (len(PATCHES) - 2)


def test_prepared_tree_is_reused_only_when_complete(sdist_dir):
    first = tree.prepare("0.2.4", PATCHES_DIR / "series", sdist_dir, report=lambda _: None)
    again = tree.prepare("0.2.4", PATCHES_DIR / "series", sdist_dir, report=lambda _: None)
    assert first == again
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".partial-")]


def test_a_patch_that_does_not_apply_names_file_and_hunk(pristine_tree):
    transform = pristine_tree / "optax/_src/transform.py"
    text = transform.read_text()
    transform.write_text(
        text.replace(
            "capped_inv_norm = jnp.minimum(1.0, 1.0/otu.tree_l2_norm(updates))",
            "capped_inv_norm = jnp.minimum(1.0, 2.0/otu.tree_l2_norm(updates))",
        )
    )
    status = series.patch_status(pristine_tree, PATCHES[0], "0.2.4")
    assert status.state == "conflicts"
    assert status.detail.startswith("optax/_src/transform.py, hunk at line ")


def test_the_release_package_imports_itself_as_optax_release_and_leaves_its_tests_out(pristine_tree):
    """test_never_worse.py's property runs the tree without the series beside the optax under test."""
    folder = pipeline.release_package(pristine_tree)
    package = folder / "optax_release"
    sources = sorted(p.relative_to(pristine_tree / "optax") for p in (pristine_tree / "optax").rglob("*.py"))
    copied = sorted(p.relative_to(package) for p in package.rglob("*.py"))
    assert copied == [p for p in sources if not p.name.endswith("_test.py")]
    for path in package.rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import optax", "from optax")):
                assert stripped.startswith(("import optax_release", "from optax_release")), f"{path}: {line}"
    assert pipeline.release_package(pristine_tree) == folder  # reused while the tree is the same


def test_an_import_of_optax_the_rewrite_does_not_know_is_refused(tmp_path):
    tree = tmp_path / "optax-fork"
    (tree / "optax").mkdir(parents=True)
    (tree / "optax" / "__init__.py").write_text("from optax import _src\nimport optax.tree\n")
    (tree / "optax" / "odd.py").write_text("import optax, jax\n")
    with pytest.raises(GateError, match=r"optax/odd.py imports optax in a form not rewritten: import optax, jax"):
        pipeline.release_package(tree)
    assert not list((tmp_path / "work").rglob("optax_release"))  # nothing half-done left
