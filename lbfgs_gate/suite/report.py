"""Failure messages that are bug reports: environment, problem, and a reproduction."""

from __future__ import annotations

import textwrap
from importlib.metadata import version

import numpy as np

from lbfgs_gate.defects import DefectObserved
from lbfgs_gate.plugin import patch_state


def check(holds, message) -> None:
    """The one place a detector asserts its property: if it does not hold, that is the
    defect's symptom, raised as DefectObserved (the gate counts nothing else as a
    detection). `message` is the failure report, or a function that builds it (only
    on failure: reports print whole arrays)."""
    if not bool(holds):
        raise DefectObserved(message() if callable(message) else message)


def _literal(array) -> str:
    return np.array2string(np.asarray(array), separator=", ", precision=17, threshold=10_000, max_line_width=10_000)


def problem_report(
    what: str,
    problem,
    *,
    solver: str,
    derivative: str,
    objective="quadratic",
    got=None,
    argnums=1,
    tangents=None,
    **static,
) -> str:
    """A failure message: what failed, where, and lines that reproduce it outside the suite.

    problem: its A, b and x0 (a strategies.Problem), in the dtype that ran.
    argnums: which of (A, b, x0) "jacfwd" and "grad" differentiate, an index or a tuple.
    tangents: (dA, db, dx0) for derivative "jvp".
    """
    A, b, x0 = problem.A, problem.b, problem.x0
    dtype_name = np.asarray(A).dtype.name
    options = "".join(f", {key}={value!r}" for key, value in static.items())
    if objective != "quadratic":
        options += f", objective={objective!r}"
    # lbfgs_solve also returns its step count and residual; derivatives are of the iterate.
    iterate = "[0]" if solver == "lbfgs_solve" else ""
    solve = f"lambda A, b, x0: solvers.{solver}(A, b, x0{options}){iterate}"
    call = {
        "value": f"solvers.{solver}(A, b, x0{options})",
        "jacfwd": f"jax.jacfwd({solve}, argnums={argnums!r})(A, b, x0)",
        "grad": f"jax.grad(lambda *p: ({solve})(*p).sum(), argnums={argnums!r})(A, b, x0)",
        "jvp": f"jax.jvp({solve}, (A, b, x0), (dA, db, dx0))",
    }.get(derivative, f"{derivative} of solvers.{solver}(A, b, x0{options})")
    arrays = {"A": A, "b": b, "x0": x0}
    if tangents is not None:
        arrays.update(zip(("dA", "db", "dx0"), tangents, strict=True))
    definitions = "\n".join(
        f"{name} = jnp.array({_literal(value)}, dtype=jnp.{dtype_name})" for name, value in arrays.items()
    )
    reproduction = "\n".join(
        [
            "import jax, jax.numpy as jnp",
            f'jax.config.update("jax_enable_x64", {dtype_name == "float64"})',
            "from lbfgs_gate.suite import solvers  # run from the project root",
            definitions,
            f"print({call})",
        ]
    )
    lines = [
        what,
        f"optax {version('optax')}, jax {version('jax')}; patch state: {patch_state()}",
        f"problem: {objective}, dtype {dtype_name}, solver {solver}{options}, derivative {derivative}",
    ]
    if got is not None:
        lines.append(f"got: {_literal(got)}")
    lines += ["reproduce:", textwrap.indent(reproduction, "    ")]
    return "\n".join(lines)
