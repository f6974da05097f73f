"""Traced programs kept between runs, so that a warm gate does not trace them again.

Tracing, not compiling, is what a warm gate spends its time on: JAX's persistent cache keeps
compiled executables, but every process traces its jitted functions again, and tracing the
derivative of an `optax.lbfgs()` solve (its zoom linesearch is a while loop of conds, which
`jax.jacfwd` differentiates and batches) costs seconds. `jax.export` writes a traced and
lowered program to bytes; read back, it runs the same StableHLO, so what a test computes does
not change (measured: bitwise the jitted function's results; the primal identity test checks
it on every patched run, as its reference is recorded without this cache).

A program is kept under a key that holds everything its trace depends on: the content of
every file of the optax package imported here (a patched tree and the release it came from
differ there, as do two mutants), the source of the lbfgs_gate package (the solvers traced),
the name and version of every installed distribution (jax, jaxlib, chex, numpy, ...), the
Python and the machine, the JAX settings that change a trace (x64, matmul precision,
promotion rules), the function's name and static configuration, and the shapes and dtypes of
its arguments. An entry is its payload's SHA-256 and the payload; one that does not match is
traced again and rewritten.

Off unless the gate's runner names a folder (LBFGS_GATE_PROGRAM_CACHE: the gate's sessions on
optax it built itself; never the fork gate, `lbfgs-gate check` or a user's own pytest run),
under a trace (a caller's jit, vmap or grad gets the jitted function), or where this jax has
no `jax.export` or cannot serialize (no flatbuffers), or where the program has a custom call
(below). A function that raises while traced
raises as the jitted function does: it is then traced by `jax.jit`, and nothing is kept.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from pathlib import Path

import jax
import numpy as np

FOLDER = "LBFGS_GATE_PROGRAM_CACHE"
# JAX settings a trace depends on (read when a program is called: tests switch x64).
SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_debug_nans",
    "jax_debug_infs",
    "jax_disable_jit",
)


def _tree_digest(digest, root: Path) -> None:
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")


@functools.cache
def _environment_key() -> str:
    """What every program traced in this process depends on, whatever it is."""
    digest = hashlib.sha256(b"lbfgs-gate programs 2\0")
    optax = importlib.util.find_spec("optax")
    for location in optax.submodule_search_locations or ():
        _tree_digest(digest, Path(location))
    _tree_digest(digest, Path(__file__).resolve().parent.parent)
    distributions = sorted(
        f"{dist.metadata['Name']}=={dist.version}".lower() for dist in importlib.metadata.distributions()
    )
    digest.update("\n".join(distributions).encode())
    digest.update(f"{sys.version}\0{platform.machine()}\0{platform.system()}".encode())
    digest.update(os.environ.get("LBFGS_GATE_PATCH_STATE", "").encode())
    return digest.hexdigest()


def _settings() -> str:
    return repr([(name, getattr(jax.config, name, None)) for name in SETTINGS])


def _export():
    """jax.export, where this jax has it and can serialize; else None."""
    try:
        from jax import export
        from jax._src.export import serialization  # noqa: F401  (needs flatbuffers)
    except ImportError:
        return None
    return export


def _spec(leaf):
    abstractify = getattr(jax.api_util, "shaped_abstractify", None) or jax.typeof
    aval = abstractify(leaf)
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


def _tracing(leaves) -> bool:
    tracer = getattr(jax.core, "Tracer", None)
    if tracer is None:
        from jax._src.core import Tracer as tracer
    return any(isinstance(leaf, tracer) for leaf in leaves)


def _digest(value) -> str:
    """A closed-over value, whole: an array by dtype, shape and bytes, anything else by repr."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        array = np.asarray(value)
        return f"{array.dtype}{array.shape}:{hashlib.sha256(array.tobytes()).hexdigest()}"
    return repr(value)


def kept(jitted, identity: str, *closed):
    """`jitted`, its trace kept between runs (`Program`), unless something in its identity or
    in the values it closes over (`closed`, each named whole by `_digest`) prints as an
    address: such a function is not named by its identity, and runs as it is."""
    identity = " ".join((identity, *map(_digest, closed)))
    return jitted if " at 0x" in identity else Program(jitted, identity)


class Program:
    """A jitted function whose trace is kept on disk; called as the function is.

    `identity` must name the function completely: its name and every static value it
    closes over (the traced arguments are keyed by their shapes and dtypes); `kept` builds it."""

    def __init__(self, jitted, identity: str):
        self.jitted, self.identity = jitted, identity
        self._loaded = {}  # key -> the exported program, or None where the jitted function serves

    def __call__(self, *args):
        program = self._program(args)
        return self.jitted(*args) if program is None else program.call(*args)

    def _program(self, args):
        """The kept program for these arguments, or None where the jitted function serves."""
        folder, export = os.environ.get(FOLDER), _export()
        if not folder or export is None or _tracing(jax.tree.leaves(args)):
            return None
        specs = jax.tree.map(_spec, args)
        shapes = repr([(s.shape, str(s.dtype), s.weak_type) for s in jax.tree.leaves(specs)])
        key = hashlib.sha256(
            "\0".join((_environment_key(), _settings(), self.identity, repr(jax.tree.structure(args)), shapes)).encode()
        ).hexdigest()
        if key not in self._loaded:
            self._loaded[key] = self._load(Path(folder) / key[:2] / key, export, specs)
        return self._loaded[key]

    def _load(self, path: Path, export, specs):
        try:
            entry = path.read_bytes()
            payload = entry[32:]
            if hashlib.sha256(payload).digest() == entry[:32]:
                return export.deserialize(bytearray(payload))
        except (OSError, ValueError):
            pass
        try:
            exported = export.export(self.jitted)(*specs)
            if "custom_call" in exported.mlir_module():
                # A custom call (LAPACK, for a linear solve) runs a kernel that jaxlib registers
                # when it lowers the operation: read back in a process that lowered none, the
                # program crashed (segmentation fault, jax 0.4.35). Such programs are not kept.
                return None
            payload = bytes(exported.serialize())
        except Exception:  # noqa: BLE001  the jitted function, traced by jax.jit, raises or runs as it does
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_bytes(hashlib.sha256(payload).digest() + payload)
        os.replace(partial, path)
        return export.deserialize(bytearray(payload))
