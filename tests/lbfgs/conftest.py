"""JAX configuration and hypothesis profiles for the suite that runs against optax.

This is the only place that touches global JAX configuration.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# float64 problems need x64. float32 problems run with x64 off, as a float32 user
# runs them: optax 0.2.3 and 0.2.4 crash in the zoom linesearch on float32
# parameters when x64 is on, so the two dtypes cannot share the setting.
jax.config.update("jax_enable_x64", True)

# Compilation dominates the first example of each configuration: no deadline.
_common = dict(
    deadline=None,
    # The function-scoped fixtures (dtype, x64) are per test, the same for every example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("ci", max_examples=200, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=2000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(autouse=True)
def _x64_matches_dtype(request):
    """x64 on for float64 tests, off for float32 ones (parametrized as `dtype`)."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    dtype = params.get("dtype")
    wanted = True if dtype is None else np.dtype(dtype) == np.float64
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", wanted)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(params=[jnp.float32, jnp.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param
