"""Primal L-BFGS runs whose results must not change under the patch series.

The series only touches derivatives, so every iterate and value of these runs must
be bitwise identical before and after it. tools/record_primal_reference.py records
them on the release as published (in its pinned environment); test_primal_identity.py
compares the optax under test against that record.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
NUM_STEPS = 25


def reference_path(optax_version: str | None = None, jax_version: str | None = None) -> Path:
    """The reference file for an (optax, jax) pair: bitwise results depend on both (and on
    the processor). The gate's patched sessions record one on the spot and name it in
    LBFGS_GATE_PRIMAL_REFERENCE; otherwise the one committed in tests/lbfgs/data."""
    if os.environ.get("LBFGS_GATE_PRIMAL_REFERENCE") and not (optax_version or jax_version):
        return Path(os.environ["LBFGS_GATE_PRIMAL_REFERENCE"])
    optax_version = optax_version or version("optax")
    jax_version = jax_version or version("jax")
    return DATA_DIR / f"primal-optax-{optax_version}-jax-{jax_version}.json"


def _spd(rng, eigenvalues):
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return (q * np.asarray(eigenvalues)) @ q.T


def problems() -> list[dict]:
    """The fixed problems: several quadratics and one non-quadratic objective."""
    rng = np.random.default_rng(20261124)
    cases = [
        ("quadratic-2d", "quadratic", [[3.0, 1.0], [1.0, 2.0]], [1.0, -2.0], [0.0, 0.0]),
        ("quadratic-5d-cond1e3", "quadratic", _spd(rng, np.logspace(0, 3, 5)), rng.standard_normal(5),
         np.zeros(5)),
        ("quadratic-8d-repeated", "quadratic", _spd(rng, [1, 1, 1, 10, 10, 10, 100, 100]),
         10.0 * rng.standard_normal(8), rng.standard_normal(8)),
        ("quadratic-3d-large-gradient", "quadratic", _spd(rng, [2.0, 5.0, 7.0]), [300.0, -40.0, 5.0],
         [1.0, 1.0, 1.0]),
        ("log-sum-exp-4d", "log-sum-exp", _spd(rng, [0.5, 1.0, 2.0, 4.0]), rng.standard_normal(4),
         np.zeros(4)),
    ]
    return [
        dict(name=name, objective=objective, A=np.asarray(A, float), b=np.asarray(b, float),
             x0=np.asarray(x0, float))
        for name, objective, A, b, x0 in cases
    ]


def run(problem: dict, dtype) -> dict[str, np.ndarray]:
    """Every primal output the comparison covers, for one problem in one dtype."""
    import jax.numpy as jnp

    from tests.lbfgs import solvers

    A, b, x0 = (jnp.asarray(problem[k], dtype) for k in ("A", "b", "x0"))
    objective = problem["objective"]
    iterates, values = solvers.compiled("lbfgs_trajectory", num_steps=NUM_STEPS, objective=objective)(A, b, x0)
    outputs = {"lbfgs_iterates": iterates, "lbfgs_values": values}
    solution, steps, relative_grad = solvers.compiled("lbfgs_solve", max_steps=NUM_STEPS, objective=objective)(
        A, b, x0
    )
    outputs.update(lbfgs_solve_x=solution, lbfgs_solve_steps=steps, lbfgs_solve_relative_grad=relative_grad)
    if objective == "quadratic":
        outputs["scale_by_lbfgs_unroll"] = solvers.compiled("scale_by_lbfgs_unroll", num_steps=NUM_STEPS)(A, b, x0)
    return {key: np.asarray(value) for key, value in outputs.items()}


def encode(array: np.ndarray) -> dict:
    """Exact, bit-preserving text form of an array."""
    return {"dtype": array.dtype.name, "shape": list(array.shape), "hex": array.tobytes().hex()}


def decode(entry: dict) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(entry["hex"]), dtype=entry["dtype"]).reshape(entry["shape"])


def load_reference(path: Path) -> dict:
    return json.loads(Path(path).read_text())
