"""JAX configuration and hypothesis profiles for the suite that runs against optax.

This is the only place that touches global JAX configuration.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import settings

# float64 problems need x64. float32 problems run with x64 off, as a float32 user
# runs them: optax 0.2.3 and 0.2.4 crash in the zoom linesearch on float32
# parameters when x64 is on, so the two dtypes cannot share the setting. The fixture
# below sets it per test and restores it after, so that optax's own tests, which the
# gate runs in the same pytest processes, see JAX as they would alone.

# Compilation dominates the first example of each configuration: no deadline. One bug
# reported per property (report_multiple_bugs=False): a second failing assertion site
# must not turn the defect's symptom into an exception group. Health checks stay on
# here; a property that needs one off says why (test_properties.PROPERTY).
_common = dict(deadline=None, report_multiple_bugs=False)
settings.register_profile("dev", max_examples=30, **_common)
# The gate's sessions force this profile (lbfgs_gate/runner.py) and refuse a run under any other.
settings.register_profile("ci", max_examples=200, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=2000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _no_local_constants():
    """The search draws from hypothesis's own constants only.

    hypothesis (6.1xx) also draws, now and then, literal constants of "local" modules: those
    outside site-packages and outside test folders that happen to be imported. From a clone
    that is the gate's own package, so its literals, and which of its modules a worker has
    imported, would steer the derandomized search: measured, moving the harness out of
    tests/ changed the examples found. Installed (site-packages) nothing is local. This keeps
    the search the same in both: the pool of local constants stays empty.
    """
    try:
        from hypothesis.internal.conjecture import providers
    except ImportError:  # pragma: no cover - a hypothesis without the feature
        return
    if hasattr(providers, "_get_local_constants") and hasattr(providers, "Constants"):
        empty = providers.Constants()
        providers._get_local_constants = lambda: empty


_no_local_constants()


def pytest_configure(config):
    for name in ("float32", "float64"):
        config.addinivalue_line("markers", f"{name}: the test's problems are {name} (x64 set to match)")


def _dtype(node):
    """The dtype a test runs in: its `dtype` parameter, else its float32/float64 marker, else None."""
    params = getattr(getattr(node, "callspec", None), "params", {})
    if "dtype" in params:
        return np.dtype(params["dtype"])
    for name in ("float32", "float64"):
        if node.get_closest_marker(name) is not None:
            return np.dtype(name)
    return None


@pytest.fixture(autouse=True)
def _x64_matches_dtype(request):
    """x64 on for float64 tests, off for float32 ones (a `dtype` parameter or a float32/float64 marker)."""
    dtype = _dtype(request.node)
    wanted = True if dtype is None else dtype == np.float64
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", wanted)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(params=[jnp.float32, jnp.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


# Tests that trace the same solver configurations run on one pytest-xdist worker
# (`--dist loadgroup`, the gate's default): a configuration is traced once per process,
# and tracing, not running, is what the suite spends its time on. The property and
# seed-leak tests share their solves per dtype; the rest spread freely.
# test_warm_starts.py shares the float64 implicit solve; test_pytrees.py and
# test_objectives.py, test_notebook_loops.py and test_implicit_recipe.py share compiled functions within each file.
_SHARED_SOLVES = ("test_properties.py", "test_seed_leak.py", "test_warm_starts.py")
_SHARED_WITHIN = ("test_pytrees.py", "test_objectives.py", "test_notebook_loops.py", "test_implicit_recipe.py")


def pytest_collection_modifyitems(items):
    for item in items:
        dtype = _dtype(item)
        if item.path.name in _SHARED_SOLVES and dtype is not None:
            item.add_marker(pytest.mark.xdist_group(f"solves-{dtype.name}"))
        elif item.path.name in _SHARED_WITHIN:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
