"""The kept traces (programs.py) change what runs in no way (PASS_TO_PASS, every optax).

A warm gate runs the suite's solvers from programs traced by an earlier run. That is sound
only if a kept program computes what the jitted function computes, is keyed on the optax it
traced, is traced again when its entry is damaged, and is not used where it cannot be (under
a caller's trace, a program with a custom call, a function whose identity names an address).
"""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lbfgs_gate.suite import programs, solvers

pytestmark = pytest.mark.xdist_group("kept-programs")


def _unroll(A, b, x0):
    return solvers.scale_by_lbfgs_unroll(A, b, x0, num_steps=8, step_size=0.5)


def _problem(dtype):
    A = np.diag(np.array([1.0, 4.0, 9.0], dtype))
    return A, np.array([1.0, -2.0, 0.5], dtype), np.zeros(3, dtype)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(programs.FOLDER, str(tmp_path))
    return tmp_path


def _entries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_kept_program_gives_the_jitted_result_bitwise(folder, dtype):
    jitted = jax.jit(jax.jacfwd(_unroll, argnums=1))
    problem = _problem(dtype)
    want = np.asarray(jitted(*problem))
    first = programs.kept(jitted, f"test_kept_programs jacfwd {dtype}")(*problem)
    assert len(_entries(folder)) == 1
    # A new Program, as a new process has: read from the folder, not traced.
    second = programs.kept(jitted, f"test_kept_programs jacfwd {dtype}")(*problem)
    for got in (first, second):
        np.testing.assert_array_equal(np.asarray(got), want)
        assert np.asarray(got).dtype == want.dtype


def test_damaged_entry_is_traced_again(folder, dtype):
    jitted = jax.jit(_unroll)
    problem = _problem(dtype)
    programs.kept(jitted, "test_kept_programs damaged")(*problem)
    (entry,) = _entries(folder)
    entry.write_bytes(entry.read_bytes()[:-7])  # cut short, as a full disk leaves it
    got = programs.kept(jitted, "test_kept_programs damaged")(*problem)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jitted(*problem)))
    assert programs.kept(jitted, "test_kept_programs damaged")._program(problem) is not None
    assert entry.stat().st_size > 32


def test_key_follows_every_file_of_the_optax_traced(tmp_path):
    import optax

    copy = tmp_path / "optax"
    shutil.copytree(Path(optax.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    digests = []
    for edit in (None, "transform.py", "_src/linesearch.py"):
        if edit is not None:
            target = next(copy.rglob(Path(edit).name))
            target.write_text(target.read_text() + "\n# one line more\n")
        digest = programs.hashlib.sha256()
        programs._tree_digest(digest, copy)
        digests.append(digest.hexdigest())
    assert len(set(digests)) == 3


def test_not_kept_under_a_trace_with_a_custom_call_or_an_address(folder):
    jitted = jax.jit(_unroll)
    A, b, x0 = _problem(np.float32)
    program = programs.kept(jitted, "test_kept_programs traced")
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda b: program(A, b, x0))(b)), np.asarray(jitted(A, b, x0)))
    assert _entries(folder) == []
    solve = jax.jit(lambda A, b: jnp.linalg.solve(A, b))
    kept_solve = programs.kept(solve, "test_kept_programs linear solve")
    np.testing.assert_array_equal(np.asarray(kept_solve(A, b)), np.asarray(solve(A, b)))
    assert _entries(folder) == []
    assert programs.kept(jitted, "test_kept_programs closes over", object()) is jitted
