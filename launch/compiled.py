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


@functools.partial(jax.jit, static_argnames=('length', 'batch_size', 'balanced'))
def _update_chunk(agent, buffer, data_key, start_step, length, batch_size, appended=None, balanced=False):
    """`length` updates; update i draws its batch with fold_in(data_key, start_step + i). With
    `appended` (the `before` of the append of the last `length` online transitions), update i sees
    the buffer as it was after only the first i + 1 of them, as if each were appended just before
    its update (rows they overwrote in a full ring included). `balanced`: half offline, half online
    rows (`ReplayBuffer.sample`)."""

    def one_update(agent, i):
        rng = jax.random.fold_in(data_key, start_step + i)
        if appended is None:
            batch = buffer.sample(rng, batch_size, balanced)
        else:
            batch = buffer.sample_during_append(rng, batch_size, appended, i + 1, balanced)
        return agent.update(batch)

    agent, infos = jax.lax.scan(one_update, agent, jnp.arange(length))
    return (agent, *_chunk_result(infos))


def offline_chunk(agent, buffer, data_key, start_step, length, batch_size, balanced=False):
    """`length` updates on batches sampled on the device from the whole buffer."""
    return _update_chunk(agent, buffer, data_key, start_step, length, batch_size, balanced=balanced)


@functools.partial(jax.jit, donate_argnames=('buffer',))
def _append(buffer, transitions):
    return buffer.append(transitions)


@functools.partial(jax.jit, static_argnames=('count',))
def _before_append(buffer, count):
    return buffer.before_append(count)


def online_chunk(agent, buffer, transitions, data_key, start_step, batch_size, balanced=False):
    """Appends the new transitions, then one update per transition (the paper's one update per
    env step). Two compiled calls: the append is in place on the donated buffer, the updates only
    read it; inside one call XLA copied the whole buffer every time (60 ms a step at 1M rows, CPU)."""
    length = len(transitions['observations'])
    before = _before_append(buffer, length)  # separate: a read inside the append made XLA copy the buffer
    buffer = _append(buffer, transitions)
    agent, info, finite = _update_chunk(agent, buffer, data_key, start_step, length, batch_size, before, balanced)
    return agent, buffer, info, finite


@functools.partial(jax.jit, static_argnames=('evaluation',))
def policy_action(agent, observation, key, *indices, evaluation=False):
    """The agent's action (exploring), or with `evaluation` its evaluation action where it has one."""
    for index in indices:
        key = jax.random.fold_in(key, index)
    act = getattr(agent, 'eval_actions', agent.sample_actions) if evaluation else agent.sample_actions
    return act(observation, key)
