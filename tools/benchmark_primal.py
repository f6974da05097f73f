"""What the series costs a solve that nobody differentiates: optax.lbfgs() steps, timed.

Run it once with the release importable and once with the series' tree first on PYTHONPATH, side by
side, on a quiet machine:

    PYTHONPATH=PATH/TO/tree python tools/benchmark_primal.py --sizes 100 1000 10000

For each size n: a jitted lax.fori_loop of --steps optax.lbfgs() steps on a random quadratic
(float32, x64 off), the first call (compile and run) and the best of --runs warm calls, and the
size of the optimizer's state.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax


def solve(n: int, steps: int):
    rng = np.random.default_rng(0)
    diagonal = jnp.asarray(np.geomspace(1.0, 100.0, n), jnp.float32)
    b = jnp.asarray(rng.normal(size=n), jnp.float32)

    def fun(x):
        return 0.5 * jnp.sum(diagonal * x * x) - b @ x

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    @jax.jit
    def run(x0):
        def step(_, carry):
            x, state = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
            return optax.apply_updates(x, updates), state

        return jax.lax.fori_loop(0, steps, step, (x0, opt.init(x0)))[0]

    return run, jnp.zeros(n, jnp.float32), opt.init(jnp.zeros(n, jnp.float32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    print(f"optax {optax.__version__} from {optax.__file__.rsplit('/optax/', 1)[0]}")
    for n in arguments.sizes:
        run, x0, state = solve(n, arguments.steps)
        start = time.perf_counter()
        run(x0).block_until_ready()
        cold = time.perf_counter() - start
        warm = []
        for _ in range(arguments.runs):
            start = time.perf_counter()
            run(x0).block_until_ready()
            warm.append(time.perf_counter() - start)
        state_bytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state))
        print(
            f"n={n}: {arguments.steps} steps, first call {cold:.2f} s, warm best {min(warm) * 1e3:.1f} ms, "
            f"state {state_bytes / 2**20:.2f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
