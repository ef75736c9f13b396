"""The compiled parts of the training loop, for a group of R runs at once (a single run is R = 1).

Agents and their replay buffers are stacked along a leading run axis and every function here is
`vmap`-ed over it: K updates per call in one compiled loop (`jit` + `fori_loop`; offline, K is a traced
argument, so every offline chunk length shares one compile; the O2O calls take their length as a static
argument), one policy call for all runs. Update `i` of run r draws its batch with `fold_in(data_key[r], i)`
and each agent whose update draws noise carries its own key, so a seed gives the same batches and noise
whatever K is and whichever group it trains in.
"""

import contextlib
import functools
import signal
import threading

import jax
import jax.numpy as jnp

# The append and a single update (the O2O step with one update per env step, the default) are compiled
# without XLA's command buffers (CUDA graphs; nothing changes on a CPU): they run once per env step on new
# buffers, so their graphs were updated and relaunched on every call. On an H100, 8 O2O runs made 11-30 %
# more env steps/s without them in each of 5 pairs (launch/bench.py; docs/speed.md); one run was within
# its spread. A loop of updates keeps them (the offline chunk, and the O2O step's K > 1 updates per call):
# it replays one graph per trip, and offline one run made 28 % fewer updates/s without them.
STEP_COMPILER_OPTIONS = {'xla_gpu_enable_command_buffer': ''}


@contextlib.contextmanager
def signals_held():
    """Holds SIGINT and SIGTERM back until the block ends, then delivers them (in the main thread; elsewhere
    nothing to hold). For calls that may compile: XLA compiles in a thread of its own, and a Ctrl-C that ended
    the wait for it let the process exit while the compile went on, which crashed it (SIGSEGV) instead of
    stopping it with its exit code. A compile takes seconds; the waits for results stay interruptible.
    As a decorator (`@signals_held()`), it holds them for each call of the function."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):  # each once, to the handlers of before the block
            signal.raise_signal(s)


def _run_updates(agents, buffer, data_keys, start_step, length, batch_size, appended=None, balanced=False):
    """`length` updates of every run; update i draws its batch with fold_in(data_key, start_step + i).
    → (agents, per-run means of the metrics, per run whether every metric of every update was finite).
    `length` may be a traced value: one compiled program serves every chunk length (the first chunk,
    a full one, the one before an evaluation). With `appended` (per run, the `before` of the append
    of its last `length` online transitions), update i sees the run's ring as it was after only the
    first i + 1 of them, as if each were appended just before its update. `balanced`: half offline,
    half online rows (`ReplayBuffer.sample`)."""

    def one_run(agent, ring, data_key, before):
        def batch(i):
            rng = jax.random.fold_in(data_key, start_step + i)
            if before is None:
                return ring.sample(rng, batch_size, balanced)
            return ring.sample_during_append(rng, batch_size, before, i + 1, balanced)

        def one_update(i, carry):
            agent, sums, finite = carry
            agent, info = agent.update(batch(i))
            leaves = jax.tree_util.tree_leaves(info)
            finite = finite & jnp.all(jnp.stack([jnp.isfinite(v).all() for v in leaves]))
            return agent, jax.tree_util.tree_map(jnp.add, sums, info), finite

        shapes = jax.eval_shape(lambda a: a.update(batch(0))[1], agent)
        zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        agent, sums, finite = jax.lax.fori_loop(0, length, one_update, (agent, zeros, jnp.array(True)))
        return agent, jax.tree_util.tree_map(lambda v: v / length, sums), finite

    return jax.vmap(one_run)(agents, buffer.runs, data_keys, appended)


@signals_held()
@jax.jit
def states_finite(agents):
    """Per run, whether every array of its agent state is finite. The metrics see the parameters before each
    update, so a chunk's last update can leave them non-finite unseen: checked before a checkpoint is written (a
    pass over the whole state, not made every env step)."""

    def finite(agent):
        return functools.reduce(
            jnp.logical_and, [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(agent)], jnp.array(True)
        )

    return jax.vmap(finite)(agents)


@signals_held()
@functools.partial(jax.jit, static_argnames=('batch_size', 'balanced'))
def offline_chunk(agents, buffer, data_keys, start_step, length, batch_size, balanced=False):
    """`length` updates per run on batches sampled on the device: (agents, mean metrics, finite).
    `length` is traced: calls with different lengths reuse one compiled program."""
    return _run_updates(agents, buffer, data_keys, start_step, length, batch_size, balanced=balanced)


def _policy(agents, observations, keys, indices, evaluation=False):
    def one_run(agent, observation, key):
        for index in indices:
            key = jax.random.fold_in(key, index)
        act = getattr(agent, 'eval_actions', agent.sample_actions) if evaluation else agent.sample_actions
        return act(observation, key)

    return jax.vmap(one_run)(agents, observations, keys)


@signals_held()
@functools.partial(jax.jit, static_argnames=('evaluation',))
def policy_action(agents, observations, keys, *indices, evaluation=False):
    """One batched policy call for all runs: observations (R, ..., obs) -> actions (R, ..., act);
    run r's noise comes from fold_in(keys[r], *indices). Exploring, or with `evaluation` each agent's
    evaluation action where it has one."""
    return _policy(agents, observations, keys, indices, evaluation)


@functools.partial(jax.jit, donate_argnames=('runs',), compiler_options=STEP_COMPILER_OPTIONS)
def _append(runs, transitions):
    return jax.vmap(lambda ring, t: ring.append(t))(runs, transitions)


@functools.partial(jax.jit, static_argnames=('count',))
def _before_append(runs, count):
    return jax.vmap(lambda ring: ring.before_append(count))(runs)


@signals_held()
def online_chunk(
    agents, buffer, transitions, data_keys, start_step, batch_size, observations=None, act_keys=None, balanced=False
):
    """Appends each run's new transitions (R, L, ...), then one update per transition (the paper's one
    update per env step); with `observations` and `act_keys`, also the next actions for them, drawn
    with fold_in(act_key, start_step + L) by the updated agents, so one call serves an env step.
    Two compiled calls: the append is in place on the donated rings, the updates only read them
    (inside one call XLA copied the whole buffer every time: 60 ms a step at 1M rows, CPU). With
    L > 1, a third, `before_append`, is separate as a read inside the append made XLA copy the buffer
    too; with L = 1 (the default) the one update sees the whole append, so it samples the ring as is."""
    length = transitions['observations'].shape[1]
    before = None if length == 1 else _before_append(buffer.runs, length)
    buffer = buffer.replace(runs=_append(buffer.runs, transitions))
    updates_then_act = _one_update_then_act if length == 1 else _updates_then_act
    agents, info, finite, actions = updates_then_act(
        agents, buffer, data_keys, start_step, length, batch_size, before, observations, act_keys, balanced
    )
    return agents, buffer, info, finite, actions


def _updates_then_act_program(
    agents, buffer, data_keys, start_step, length, batch_size, appended, observations, act_keys, balanced
):
    agents, info, finite = _run_updates(agents, buffer, data_keys, start_step, length, batch_size, appended, balanced)
    actions = None if observations is None else _policy(agents, observations, act_keys, (start_step + length,))
    return agents, info, finite, actions


_UPDATES_STATIC = ('length', 'batch_size', 'balanced')
_updates_then_act = jax.jit(_updates_then_act_program, static_argnames=_UPDATES_STATIC)
_one_update_then_act = jax.jit(
    _updates_then_act_program, static_argnames=_UPDATES_STATIC, compiler_options=STEP_COMPILER_OPTIONS
)


def as_group(agent):
    """One agent as a group of one run (a leading run axis of size 1)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], agent)
