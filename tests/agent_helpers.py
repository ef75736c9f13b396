"""Helpers for the agent tests: what a network's parameters say about how it was built."""

import jax


def has_layer_norm(params):
    """Whether any layer of the network whose parameters these are is a LayerNorm."""
    return any('LayerNorm' in jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params))
