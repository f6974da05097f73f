"""tools/hunk_proof.py's own parts: hunks cut, docstrings told from code, one hunk reversed (no jax)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from lbfgs_gate import PATCHES_DIR, PROJECT_ROOT, check, defects, inventory, sdist, series, tree
from lbfgs_gate.suite import corpus

# tools/ is no package: the script is loaded from its file.
_spec = importlib.util.spec_from_file_location("hunk_proof", PROJECT_ROOT / "tools" / "hunk_proof.py")
hunk_proof = sys.modules.setdefault("hunk_proof", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(hunk_proof)

TWO_FILES = (
    "Subject: [PATCH] x\n---\n"
    "diff --git a/f.py b/f.py\n--- a/f.py\n+++ b/f.py\n"
    "@@ -1,2 +1,1 @@\n a = 1\n-- \n"
    "diff --git a/g_test.py b/g_test.py\nnew file mode 100644\n--- /dev/null\n+++ b/g_test.py\n"
    "@@ -0,0 +1 @@\n+x = 1\n-- \n2.39.5\n"
)


def test_a_removed_line_that_looks_like_the_signature_stays_in_its_hunk_and_the_signature_in_none():
    first, second = hunk_proof.split_hunks(TWO_FILES)
    assert first.diff.endswith("@@ -1,2 +1,1 @@\n a = 1\n-- \n") and first.file == "f.py"
    assert second.diff.endswith("+x = 1\n") and (second.index, second.line) == (2, 1)
    assert hunk_proof.is_library(first.file) and not hunk_proof.is_library(second.file)


def test_a_hunk_shorter_than_its_header_is_refused():
    with pytest.raises(hunk_proof.GateError, match="regenerate the patch"):
        hunk_proof.split_hunks(TWO_FILES.replace("@@ -1,2 +1,1 @@", "@@ -1,3 +1,2 @@"))


@pytest.mark.parametrize("patch", sorted(PATCHES_DIR.rglob("0*.patch")), ids=lambda p: str(p.relative_to(PATCHES_DIR)))
def test_the_hunks_of_a_patch_add_and_remove_what_git_counts(patch):
    hunks = hunk_proof.split_hunks(patch.read_text())
    assert len(hunks) == sum(line.startswith("@@ ") for line in patch.read_text().splitlines())
    numstat = subprocess.run(["git", "apply", "--numstat", str(patch)], capture_output=True, text=True, check=True)
    counted = {}
    for hunk in hunks:
        body = hunk.diff.split("\n@@ ", 1)[1].splitlines()[1:]
        added, removed = counted.get(hunk.file, (0, 0))
        counted[hunk.file] = (added + sum(x[:1] == "+" for x in body), removed + sum(x[:1] == "-" for x in body))
    assert counted == {f: (int(a), int(r)) for a, r, f in (line.split("\t") for line in numstat.stdout.splitlines())}


def test_a_docstring_or_a_comment_is_docs_only_and_a_statement_is_code():
    module = '"""Module."""\n\ndef f(x):\n    """Doubles."""\n    return 2 * x  # twice\n'
    assert hunk_proof.docs_only(module, module.replace("Doubles.", "Twice x.").replace("# twice", "# 2x"))
    assert hunk_proof.docs_only(module, module.replace('    """Doubles."""\n', ""))
    assert not hunk_proof.docs_only(module, module.replace("2 * x", "x + x"))
    assert not hunk_proof.docs_only(module, module.replace('"""Doubles."""', '"""Doubles."""\n    x = x'))


def test_one_hunk_is_reversed_alone_on_a_git_tree_and_a_hunk_not_in_it_is_not(tmp_path):
    before = "".join(f"line {i}\n" for i in range(1, 21))
    after = before.replace("line 2\n", "line two\n").replace("line 19\n", "line nineteen\n")
    (tmp_path / "m.py").write_text(before)
    for command in (
        ["init", "-q"],
        ["add", "m.py"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *command], cwd=tmp_path, check=True)
    (tmp_path / "m.py").write_text(after)
    diff = subprocess.run(["git", "diff"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    first, second = hunk_proof.split_hunks(diff)
    assert (first.line, second.line) == (1, 16)
    assert hunk_proof.reverse(tmp_path, second) is None
    assert (tmp_path / "m.py").read_text() == after.replace("line nineteen\n", "line 19\n")
    assert "patch does not apply" in hunk_proof.reverse(tmp_path, second)  # already reversed: git says why
    assert (tmp_path / "m.py").read_text() == after.replace("line nineteen\n", "line 19\n")


@pytest.mark.parametrize("release", ["0.2.4", "0.2.8"])
def test_each_stage_is_the_series_up_to_its_patch_and_each_library_hunk_reverses_on_it(release, sdist_dir, tmp_path):
    statuses = tree.statuses(tree.prepare(release, PATCHES_DIR / "series", sdist_dir, report=lambda _: None))
    stages = hunk_proof.stages(statuses)
    applied = [s for s in statuses if s.state == "applies"]
    assert [stage.sources for stage in stages] == [
        tuple(s.source for s in applied[: i + 1]) for i in range(len(applied))
    ]
    assert [stage.defect is None for stage in stages] == [s.patch in defects.OPTIONS for s in applied]
    # 0001 is upstream in 0.2.8: its defect counts as fixed from the first stage on.
    assert "seed-leak" in stages[0].fixed and (stages[0].number == "0001") == (release == "0.2.4")
    pristine = sdist.unpack(sdist.fetch(release, sdist_dir), tmp_path / "pristine")
    for stage in stages:
        intact = hunk_proof.copy(pristine, tmp_path / "stage")
        for source in stage.sources:
            series.apply_patch(intact, PATCHES_DIR / source)
        for hunk in hunk_proof.split_hunks((PATCHES_DIR / stage.sources[-1]).read_text()):
            if hunk_proof.is_library(hunk.file):
                mutant = hunk_proof.copy(intact, tmp_path / "mutant")
                assert hunk_proof.reverse(mutant, hunk) is None, f"{stage.number} hunk {hunk.index}"


@pytest.mark.parametrize("release", ["0.2.4", "0.2.8"])
def test_the_stage_that_fixes_the_last_defect_is_also_judged_on_the_quick_comparison(release, sdist_dir):
    # 0006's exact phase and the zoom's flag only keep the default's derivative as the release's:
    # no detector sees them reversed, the comparison with the release does.
    statuses = tree.statuses(tree.prepare(release, PATCHES_DIR / "series", sdist_dir, report=lambda _: None))
    recorded = []

    def records():
        recorded.append(True)
        return {corpus.VARIABLE: "the release's record"}

    proofs = {s.number: hunk_proof.Proof(release, s, PATCHES_DIR, [], records) for s in hunk_proof.stages(statuses)}
    compared = {nodeid for nodeid in check.QUICK_COMPARISON if not inventory.expected()[nodeid]}
    assert compared and len(compared) < len(check.QUICK_COMPARISON)  # the quick limit's detector is left out
    assert set(proofs["0006"].compared) == compared and compared <= set(proofs["0006"].nodes)
    assert proofs["0006"].records and not proofs["0006"].expectation.detectors_only  # each loop must run
    for number, proof in proofs.items():
        if number != "0006":
            assert not proof.compared and not proof.records and not compared & set(proof.nodes), number
    assert len(recorded) == 1  # recorded once, for the one stage that needs it


@pytest.mark.parametrize("args", [["--bogus"], ["--", "-k", "seed"]], ids=["unknown-option", "selecting-pytest-args"])
def test_bad_input_ends_with_one_line_and_exit_status_2(args):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    command = [sys.executable, "tools/hunk_proof.py", *args]
    result = subprocess.run(command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
