"""The named defects the suite detects, and the patch that fixes each.

Test markers (`@pytest.mark.defect("seed-leak")`), `--known-defects` and the fork
session's advice all take their names from here.
"""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Defect:
    name: str
    summary: str
    # The patch of the series that fixes it. None marks a limit that no patch fixes:
    # its tests are strict expected failures in every session.
    patch: str | None
    # Its detectors compare the optax under test with the same tree without the series
    # (test_never_worse.py): only the sessions that apply the series (and `lbfgs-gate check`,
    # where the optax judged is not the release as published) run them.
    compares_with_release: bool = False


DEFECTS = {
    d.name: d
    for d in (
        Defect(
            "seed-leak",
            "derivatives flow through the first step's identity scale min(1, 1/|g|)",
            "0001-lbfgs-stop-gradient-through-initial-identity-scale.patch",
        ),
        Defect(
            "reverse-nan",
            "jax.grad through scale_by_lbfgs is NaN: divisions inside jnp.where",
            "0002-lbfgs-safe-divisions-for-reverse-mode.patch",
        ),
        Defect(
            "memory-leak",
            "derivatives flow through the L-BFGS memory (curvature pairs, 1/(y.s), identity scale): "
            "unrolls past convergence overflow, converged solves miss the implicit derivative",
            "0003-lbfgs-stop-gradient-through-memory.patch",
        ),
        Defect(
            "stepsize-leak",
            "derivatives flow through the stepsize the zoom linesearch picks: NaN in unrolls past "
            "convergence, converged solves miss the implicit derivative",
            "0004-zoom-linesearch-stop-gradient-through-stepsize.patch",
        ),
        Defect(
            "weight-underflow",
            "reverse mode multiplies the zero cotangent of the stopped L-BFGS memory by -1/(y^T s)^2, "
            "inf once (y^T s)^2 underflows (float32, small problems): NaN",
            "0005-lbfgs-form-curvature-weight-without-derivatives.patch",
        ),
        Defect(
            "stalled-memory-divergence",
            "once a fixed-step unroll stalls at rounding, the zero curvature pairs it pushes evict the "
            "memory and the identity scale falls back to 1: the tangent (the memory used as a constant) "
            "is then gradient descent with the learning rate and diverges when lr * lambda_max > 2, "
            "finite and wrong (the first loop of optax's examples/lbfgs.ipynb run to convergence)",
            "0006-lbfgs-precondition-derivatives-with-a-memory-of-curvature.patch",
        ),
        # Limits found by the property suite (lbfgs_gate/suite/test_properties.py): no patch fixes them.
        Defect(
            "fixed-step-divergence-at-optimum",
            "an unroll started exactly at the optimum forms no curvature pair: its tangent follows "
            "gradient descent with the step taken (a fixed step, or the linesearch's on a zero "
            "direction) and diverges when step * lambda_max > 2",
            None,
        ),
        Defect(
            "no-step-at-optimum",
            "a solve stopped on |g| <= tol |g0| takes no step when g0 = 0: d x/d b = 0, not A^-1",
            None,
        ),
        Defect(
            "stopping-rule-ignores-tangent",
            "a solve stopped on |g| <= tol |g0| sees the primal residual only: when the gradient stays "
            "in an invariant subspace (repeated eigenvalues, a symmetric problem) it lands on the "
            "solution in fewer steps than the tangent needs, after which its steps are zero and "
            "nothing corrects the tangent (in the directions of b or of A): O(1) off the implicit one",
            None,
        ),
        # Limits found on the shapes users differentiate (lbfgs_gate/suite/test_warm_starts.py,
        # lbfgs_gate/suite/test_objectives.py): no patch fixes them.
        Defect(
            "warm-start-at-solution",
            "a solve started at (or within its stopping tolerance of) its own solution takes almost no "
            "step: unrolled differentiation differentiates those steps, not the solution, and misses "
            "dx*/db = H^-1 by 0.3 to 1 relative (every release, with or without the series); "
            "differentiate the solution implicitly instead",
            None,
        ),
        Defect(
            "float32-rounding-noise-curvature",
            "a float32 unroll of scale_by_lbfgs run past convergence stores curvature pairs of rounding "
            "noise (weights 1/(y^T s) up to 1e24, some negative): the iterate is thrown off the solution "
            "(|grad f| up 1e2 to 1e14 times from its best) and the reverse gradient follows it, NaN or far "
            "off the implicit one; only a primal change fixes it (skip pairs with small "
            "y^T s, as optimistix does and upstream PR #1749 proposes)",
            None,
        ),
        # A limit of the series itself, found by the corpus of users' loops (lbfgs_gate/suite/corpus.py).
        Defect(
            "derivative-short-of-release",
            "the series' default derivative is worse than the release's where the release is right: "
            "short unrolls (the steps, and in optax.lbfgs the zoom's stepsize, are differentiated while they "
            "carry their information, but never through the first step's capped scale, upstream's choice "
            "since 0.2.5: on 0.2.8 the series gives the release's own derivative, short of the cap by that "
            "term alone; on 0.2.4 it is the term the seed-leak fix removes; and once the steps stop "
            "carrying information, the derivative a solve needs: an unroll whose updates fell below a "
            "thousandth of the largest before its end, short of convergence), Hessians with "
            "clustered eigenvalues where the solve stops before the tangent has converged, and now and "
            "then a tangent forced along the iterates (a change of A, distinct eigenvalues: the tangent a "
            "step behind); "
            "exact_unroll_derivatives=True gives the release's derivative there",
            None,
            compares_with_release=True,
        ),
    )
}


def release_comparisons() -> frozenset[str]:
    """The limits judged only where the series is applied and compared with the release."""
    return frozenset(name for name, defect in DEFECTS.items() if defect.compares_with_release)


def judged_without_the_release() -> frozenset[str]:
    """What a run that applies nothing judges (Expectation.only): every defect but those comparisons."""
    return frozenset(DEFECTS) - release_comparisons()


@dataclass(frozen=True)
class Option:
    """A patch of the series that fixes no defect: it adds an argument to optax."""

    argument: str
    summary: str
    patch: str
    # Its PASS_TO_PASS tests in the suite (lbfgs_gate/suite), one module.
    tests: str


OPTIONS = {
    o.patch: o
    for o in (
        Option(
            "exact_unroll_derivatives",
            "scale_by_lbfgs, scale_by_zoom_linesearch and lbfgs take exact_unroll_derivatives=True: "
            "derivatives flow through the heuristics the series holds constant, so the derivative of a "
            "short unroll is that of its steps (meta-learning), as on 0.2.4 as published",
            "0007-lbfgs-exact-unroll-derivatives-on-request.patch",
            "test_exact_unrolls.py",
        ),
    )
}


def absent_option_tests(optax_package) -> tuple[str, ...]:
    """The suite modules of the options the optax package at `optax_package` does not take.

    Their PASS_TO_PASS tests hold the option itself, so a tree without it (a release as
    published, a fork without 0007) runs them not at all: the gate leaves them out of the run
    and out of the inventory it expects, as it does the primal test where nothing is applied.
    """
    source = (Path(optax_package) / "_src" / "transform.py").read_text()
    return tuple(f"lbfgs_gate/suite/{o.tests}" for o in OPTIONS.values() if o.argument not in source)


def parse_names(text: str) -> list[str]:
    """Splits a comma-separated list of defect names, rejecting unknown ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DEFECTS]
    if unknown:
        from lbfgs_gate import GateError

        raise GateError(f"unknown defect name(s) {', '.join(unknown)}: use one of {', '.join(sorted(DEFECTS))}")
    return names


class DefectObserved(AssertionError):
    """The symptom of a defect, raised by a detector's own check of its property.

    The gate counts a detector as having reproduced its defect only when this is
    raised in the test's call (lbfgs_gate/record.py): a plain AssertionError (a
    precondition, a helper's check) or any other exception is a crash, not a detection.
    """
