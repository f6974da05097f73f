"""Primal L-BFGS runs whose results must not change under the patch series.

The series only touches derivatives, so every iterate and value of these runs must
be bitwise identical before and after it. `python -m lbfgs_gate.suite.primal` records them
on the tree without the series (the gate's sessions do, with that tree first on
PYTHONPATH: lbfgs_gate.pipeline.primal_reference); test_primal_identity.py compares the
optax under test against that record.

    python -m lbfgs_gate.suite.primal                 # writes lbfgs_gate/suite/data/primal-optax-V-jax-W.json
    python -m lbfgs_gate.suite.primal --output F --expect-optax-in DIR
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
NUM_STEPS = 25
# The series' option exact_unroll_derivatives (0007) changes no value either: these problems
# also run with it (recorded where optax lacks it, as the release's own run), one of each
# objective, as each run costs a compile.
EXACT_OPTION_PROBLEMS = ("quadratic-5d-cond1e3", "log-sum-exp-4d")

# Parameters as users pass them, each a quadratic over the flattened parameters (A, b and x0
# are the flat problem): a norm or a vdot that rounds differently on several leaves, a matrix
# or complex numbers changes these iterates where the flat vector's do not move. Each entry:
# the parameters' leaves by path and shape, the L-BFGS built, and the dtypes it runs in
# (complex64: refused with a TypeError before 0.2.5, as published and with the series alike).
SHAPE_STEPS = 12
TREE = {"layer/bias": (2,), "layer/kernel": (3, 2), "scale": ()}
SHAPES = {
    "tree-zoom": dict(leaves=TREE, memory_size=10, linesearch="zoom", dtypes=("float32", "float64")),
    "tree-backtracking-memory3": dict(
        leaves=TREE, memory_size=3, linesearch="backtracking", dtypes=("float32", "float64")
    ),
    "matrix-zoom-memory5": dict(leaves={"W": (4, 3)}, memory_size=5, linesearch="zoom", dtypes=("float32",)),
    "complex-zoom": dict(leaves={"z": (5,)}, memory_size=10, linesearch="zoom", dtypes=("complex64",)),
}


def reference_path(optax_version: str | None = None, jax_version: str | None = None) -> Path:
    """The reference file for an (optax, jax) pair: bitwise results depend on both (and on
    the processor). The gate's patched sessions record one on the spot and name it in
    LBFGS_GATE_PRIMAL_REFERENCE; otherwise the one committed in lbfgs_gate/suite/data."""
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
        ("quadratic-5d-cond1e3", "quadratic", _spd(rng, np.logspace(0, 3, 5)), rng.standard_normal(5), np.zeros(5)),
        (
            "quadratic-8d-repeated",
            "quadratic",
            _spd(rng, [1, 1, 1, 10, 10, 10, 100, 100]),
            10.0 * rng.standard_normal(8),
            rng.standard_normal(8),
        ),
        ("quadratic-3d-large-gradient", "quadratic", _spd(rng, [2.0, 5.0, 7.0]), [300.0, -40.0, 5.0], [1.0, 1.0, 1.0]),
        ("log-sum-exp-4d", "log-sum-exp", _spd(rng, [0.5, 1.0, 2.0, 4.0]), rng.standard_normal(4), np.zeros(4)),
    ]
    for name, shape in SHAPES.items():
        size = sum(int(np.prod(leaf)) for leaf in shape["leaves"].values())
        # Complex parameters: b and x0 hold the real parts, then the imaginary parts.
        width = 2 * size if shape["dtypes"] == ("complex64",) else size
        A = _spd(rng, np.geomspace(1.0, 50.0, size))
        cases.append((name, "shape", A, rng.standard_normal(width), 0.1 * rng.standard_normal(width)))
    return [
        dict(name=name, objective=objective, A=np.asarray(A, float), b=np.asarray(b, float), x0=np.asarray(x0, float))
        for name, objective, A, b, x0 in cases
    ]


def dtypes(problem: dict) -> tuple[str, ...]:
    """The dtypes a problem runs in."""
    if problem["objective"] != "shape":
        return ("float32", "float64")
    return SHAPES[problem["name"]]["dtypes"]


def _leaves_of(flat, leaves: dict):
    """The parameters' pytree (nested dicts by path) from the flat vector."""
    tree, start = {}, 0
    for path, shape in leaves.items():
        size = int(np.prod(shape))
        *folders, name = path.split("/")
        node = tree
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = flat[start : start + size].reshape(shape)
        start += size
    return tree


def shape_trajectory(A, b, x0, *, name: str):
    """Iterates (every leaf) and values of SHAPE_STEPS steps of the L-BFGS of SHAPES[name]."""
    import jax
    import jax.numpy as jnp
    import optax

    shape = SHAPES[name]
    linesearch = (
        optax.scale_by_backtracking_linesearch(max_backtracking_steps=15, store_grad=True)
        if shape["linesearch"] == "backtracking"
        else optax.scale_by_zoom_linesearch(max_linesearch_steps=15)
    )
    opt = optax.lbfgs(memory_size=shape["memory_size"], linesearch=linesearch)
    complex_parameters = jnp.iscomplexobj(x0)

    def fun(params):
        flat = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)])
        return 0.5 * jnp.real(jnp.vdot(flat, A @ flat)) - jnp.real(jnp.vdot(b, flat))

    def body(carry, _):
        params, state = carry
        if complex_parameters:
            # As optax's own complex test: the conjugate of jax's gradient is passed on.
            value, grad = jax.value_and_grad(fun)(params)
            grad = jax.tree.map(jnp.conj, grad)
        else:
            value, grad = optax.value_and_grad_from_state(fun)(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        params = optax.apply_updates(params, updates)
        return (params, state), (params, value)

    x0 = _leaves_of(x0, shape["leaves"])
    _, (iterates, values) = jax.lax.scan(body, (x0, opt.init(x0)), length=SHAPE_STEPS)
    return iterates, values


def _run_shape(problem: dict, dtype) -> dict[str, np.ndarray]:
    import jax
    import jax.numpy as jnp

    real = "float32" if dtype == "complex64" else dtype
    A, b, x0 = (jnp.asarray(problem[k], real) for k in ("A", "b", "x0"))
    if dtype == "complex64":
        size = A.shape[0]
        b, x0 = (jax.lax.complex(v[:size], v[size:]) for v in (b, x0))
    trajectory = jax.jit(functools.partial(shape_trajectory, name=problem["name"]))
    try:
        iterates, values = trajectory(A, b, x0)
    except TypeError as error:
        # Releases before 0.2.5 refuse complex parameters (their zoom linesearch's stepsize
        # turns complex): the same refusal, on both sides, is the identity there.
        if dtype != "complex64" or "complex" not in str(error):
            raise
        return {"refused_with_type_error": np.asarray(True)}
    outputs = {"shape_values": values}
    for path, leaf in jax.tree_util.tree_flatten_with_path(iterates)[0]:
        outputs["shape_iterates" + "".join(f"/{key.key}" for key in path)] = leaf
    return outputs


def run(problem: dict, dtype) -> dict[str, np.ndarray]:
    """Every primal output the comparison covers, for one problem in one dtype."""
    import jax.numpy as jnp

    from lbfgs_gate.suite import solvers

    if problem["objective"] == "shape":
        return {key: np.asarray(value) for key, value in _run_shape(problem, dtype).items()}

    A, b, x0 = (jnp.asarray(problem[k], dtype) for k in ("A", "b", "x0"))
    objective = problem["objective"]
    iterates, values = solvers.compiled("lbfgs_trajectory", num_steps=NUM_STEPS, objective=objective)(A, b, x0)
    outputs = {"lbfgs_iterates": iterates, "lbfgs_values": values}
    exact_option = problem["name"] in EXACT_OPTION_PROBLEMS
    if exact_option:
        iterates, values = solvers.compiled("lbfgs_trajectory", num_steps=NUM_STEPS, objective=objective, exact=True)(
            A, b, x0
        )
        outputs.update(lbfgs_iterates_exact_option=iterates, lbfgs_values_exact_option=values)
    solution, steps, relative_grad = solvers.compiled("lbfgs_solve", max_steps=NUM_STEPS, objective=objective)(A, b, x0)
    outputs.update(lbfgs_solve_x=solution, lbfgs_solve_steps=steps, lbfgs_solve_relative_grad=relative_grad)
    if objective == "quadratic":
        outputs["scale_by_lbfgs_unroll"] = solvers.compiled("scale_by_lbfgs_unroll", num_steps=NUM_STEPS)(A, b, x0)
        if exact_option:
            outputs["scale_by_lbfgs_unroll_exact_option"] = solvers.compiled(
                "scale_by_lbfgs_unroll", num_steps=NUM_STEPS, exact=True
            )(A, b, x0)
    return {key: np.asarray(value) for key, value in outputs.items()}


def encode(array: np.ndarray) -> dict:
    """Exact, bit-preserving text form of an array."""
    return {"dtype": array.dtype.name, "shape": list(array.shape), "hex": array.tobytes().hex()}


def decode(entry: dict) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(entry["hex"]), dtype=entry["dtype"]).reshape(entry["shape"])


def load_reference(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def record(output: Path) -> int:
    """Runs every problem in both dtypes with the optax imported here; writes the record."""
    import jax

    records = []
    for problem in problems():
        for dtype in dtypes(problem):
            # float32 runs with x64 off, as a float32 user runs them (see lbfgs_gate/suite/conftest.py).
            jax.config.update("jax_enable_x64", dtype == "float64")
            outputs = run(problem, dtype)
            records.append(
                {
                    "problem": problem["name"],
                    "dtype": dtype,
                    "outputs": {key: encode(value) for key, value in outputs.items()},
                }
            )
    reference = {
        "recorded_with": {name: version(name) for name in ("optax", "jax", "jaxlib", "numpy")},
        "num_steps": NUM_STEPS,
        "problems": [
            {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in p.items()}
            for p in problems()
        ],
        "records": records,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {output}: {len(records)} runs of optax {version('optax')}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lbfgs_gate.suite.primal", description=record.__doc__)
    parser.add_argument("--output", type=Path, help="where to write the record (default: lbfgs_gate/suite/data/...)")
    parser.add_argument(
        "--expect-optax-in", type=Path, help="refuse unless the optax imported here comes from this folder"
    )
    args = parser.parse_args(argv)
    import optax

    imported_from = Path(optax.__file__).resolve().parent.parent
    if args.expect_optax_in and imported_from != args.expect_optax_in.resolve():
        print(
            f"error: optax is imported from {imported_from}, not {args.expect_optax_in}: "
            "put that folder first on PYTHONPATH",
            file=sys.stderr,
        )
        return 2
    return record(args.output or reference_path())


if __name__ == "__main__":
    sys.exit(main())
