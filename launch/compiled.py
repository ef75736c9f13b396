"""The compiled parts of the training loop: K updates per call under `jit` + `lax.scan`.

Update `i` draws its batch with `fold_in(data_key, i)` and the agent carries its own key, so a seed
gives the same batches and numbers whatever K is.
"""

import functools

import jax
import jax.numpy as jnp


def _chunk_result(infos):
    """Chunk means of the metrics, and whether every metric of every update was finite."""
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(infos)]))
    return jax.tree_util.tree_map(lambda v: v.mean(0), infos), finite


@functools.partial(jax.jit, static_argnames=('length', 'batch_size'))
def offline_chunk(agent, buffer, data_key, start_step, length, batch_size):
    """`length` updates on batches sampled on the device: update i uses fold_in(data_key, i)."""

    def one_update(agent, step):
        return agent.update(buffer.sample(jax.random.fold_in(data_key, step), batch_size))

    agent, infos = jax.lax.scan(one_update, agent, start_step + jnp.arange(length))
    return (agent, *_chunk_result(infos))


@functools.partial(jax.jit, static_argnames=('batch_size',), donate_argnames=('buffer',))
def online_chunk(agent, buffer, transitions, data_key, start_step, batch_size):
    """For each new transition: append it, then one update (the paper's one update per env step)."""

    def append_and_update(carry, inputs):
        agent, buffer = carry
        transition, step = inputs
        buffer = buffer.add(transition)
        agent, info = agent.update(buffer.sample(jax.random.fold_in(data_key, step), batch_size))
        return (agent, buffer), info

    length = transitions['observations'].shape[0]
    (agent, buffer), infos = jax.lax.scan(
        append_and_update, (agent, buffer), (transitions, start_step + jnp.arange(length))
    )
    return (agent, buffer, *_chunk_result(infos))


@jax.jit
def policy_action(agent, observation, key, *indices):
    for index in indices:
        key = jax.random.fold_in(key, index)
    return agent.sample_actions(observation, key)
