"""The named defects the suite detects, and the patch that fixes each.

Test markers (`@pytest.mark.defect("seed-leak")`), `--known-defects` and the fork
session's advice all take their names from here.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Defect:
    name: str
    summary: str
    # The patch of the series that fixes it. None marks a limit that no patch fixes:
    # its tests are strict expected failures in every session.
    patch: str | None


DEFECTS = {
    d.name: d
    for d in (
        Defect(
            "seed-leak",
            "derivatives flow through the first step's identity scale min(1, 1/|g|)",
            "0001-lbfgs-stop-gradient-through-initial-identity-scale.patch",
        ),
        Defect("reverse-nan", "jax.grad through scale_by_lbfgs is NaN: divisions inside jnp.where",
               "0002-lbfgs-safe-divisions-for-reverse-mode.patch"),
        # Limits found by the property suite (tests/lbfgs/test_properties.py): no patch fixes them.
        Defect("past-convergence-curvature-overflow",
               "fixed unrolls running past convergence: step lengths shrink by ~eps a step until "
               "the tangent of rho = 1/(y.s) overflows (float64 after ~5 steps past, float32 after 2)",
               None),
        Defect("fixed-step-divergence-at-optimum",
               "scale_by_lbfgs with a fixed step started at the optimum forms no curvature pair: "
               "the tangent follows gradient descent and diverges when step * lambda_max > 2",
               None),
        Defect("no-step-at-optimum",
               "a solve stopped on |g| <= tol |g0| takes no step when g0 = 0: d x/d b = 0, not A^-1",
               None),
        Defect("solve-tangent-not-implicit",
               "forward derivatives of a converged optax.lbfgs() solve can differ from the "
               "implicit-function answer by O(1). Two causes measured: the stopping rule sees only "
               "the primal residual, so a solve converged inside an invariant subspace stops before "
               "the tangent has; and derivatives flow through the L-BFGS memory (curvature pairs, "
               "identity scale), a preconditioning heuristic: with stop_gradient on those, |AJ - I| "
               "over 150 random float64 problems fell from 3.8e-3 to 1.1e-6 (candidate patch 0003)",
               None),
    )
}


def parse_names(text: str) -> list[str]:
    """Splits a comma-separated list of defect names, rejecting unknown ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DEFECTS]
    if unknown:
        from gatekit import GateError

        raise GateError(
            f"unknown defect name(s) {', '.join(unknown)}: "
            f"use one of {', '.join(sorted(DEFECTS))}"
        )
    return names
