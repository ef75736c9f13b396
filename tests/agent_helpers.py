"""Helpers for the agent tests: what a network's parameters say about how it was built, and a training loop
compiled to run fast."""

import inspect

import jax

from launch.compiled import offline_chunk


def has_layer_norm(params):
    """Whether any layer of the network whose parameters these are is a LayerNorm."""
    return any('LayerNorm' in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params))


# The same program as `offline_chunk`, compiled with XLA's backend optimizations on: tests/conftest.py turns them
# off for the suite, whose programs mostly compile and run a few steps, but the tests that train for a thousand
# updates in the test process spend their time running, which the optimizations make about three times faster.
trained_offline_chunk = jax.jit(
    inspect.unwrap(offline_chunk),
    static_argnames=('batch_size', 'balanced'),
    compiler_options={'xla_backend_optimization_level': 2},
)
