"""PASS_TO_PASS: the patch series changes no primal value.

Every iterate and value of full L-BFGS runs (zoom linesearch, while-loop solve,
scale_by_lbfgs unroll) must be bitwise identical to the record made on the release
as published in the same pinned environment (`python -m lbfgs_gate.suite.primal`): the
one the gate's patched sessions record on the spot (LBFGS_GATE_PRIMAL_REFERENCE),
else the one committed for this (optax, jax) pair.
"""

import numpy as np
import pytest

from lbfgs_gate.plugin import patch_state
from lbfgs_gate.suite import primal

REFERENCE = primal.reference_path()


def _cases():
    if not REFERENCE.is_file():
        return [pytest.param(None, None, "float64", id="no-reference")]
    reference = primal.load_reference(REFERENCE)
    problems = {p["name"]: p for p in reference["problems"]}
    return [
        pytest.param(problems[r["problem"]], r["outputs"], r["dtype"], id=f"{r['problem']}-{r['dtype']}")
        for r in reference["records"]
    ]


@pytest.mark.parametrize("problem, recorded, dtype", _cases())
def test_lbfgs_primal_results_are_bitwise_identical_to_the_release(problem, recorded, dtype):
    assert problem is not None, (
        f"no primal reference for this environment ({REFERENCE.name}): record one on the release as "
        "published with `nox -s record_reference` and commit it"
    )
    problem = {k: (np.asarray(v) if k in ("A", "b", "x0") else v) for k, v in problem.items()}
    outputs = primal.run(problem, dtype)
    assert sorted(outputs) == sorted(recorded)
    for key, expected in recorded.items():
        expected = primal.decode(expected)
        got = outputs[key]
        same_bits = got.dtype == expected.dtype and got.shape == expected.shape and got.tobytes() == expected.tobytes()
        assert same_bits, (
            f"{key} differs from the release as published ({patch_state()}), problem {problem['name']} "
            f"in {dtype}; first differences at {np.argwhere(got != expected)[:5].tolist()}:\n"
            f"got      {got!r}\nrecorded {expected!r}"
        )
