"""The shared training loop: K-invariance, checkpoints, and whole runs of both CLIs on generated data."""

import argparse
import csv
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from agents import AGENTS
from agents.fav import FAVAgent, FAVConfig
from agents.iql import IQLAgent, IQLConfig
from datasets.buffer import GroupBuffer
from envs.evaluation import episode_seed
from envs.registry import resolve_task
from launch.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from launch.command_line import UserError
from launch.compiled import as_group, offline_chunk, online_chunk, policy_action, states_finite
from launch.loop import RERUN_TO_GO_ON, _run_keys, _write_final
from launch.run_logs import RunLogger, read_json, write_json
from launch.settings import parse_args
from tests.cli_helpers import (
    REPO,
    SMALL,
    assert_same_result,
    checkpoint_leaves,
    launch,
    process_group,
    run_killed_then_resumed,
)


def _synthetic_data(n=128):
    rng = np.random.default_rng(0)
    return dict(
        observations=rng.normal(size=(n, 5)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        next_observations=rng.normal(size=(n, 5)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        masks=np.ones(n, np.float32),
        terminals=np.zeros(n, np.float32),
    )


def _agent(data, seed=0):
    config = FAVConfig(hidden_dims=(32, 32), batch_size=16)
    return as_group(FAVAgent.create(jax.random.PRNGKey(seed), data['observations'][:1], data['actions'][:1], config))


def test_same_batches_and_numbers_whatever_k():
    data = _synthetic_data()
    buffer = GroupBuffer.of_one_task(data)
    start = _agent(data)
    data_key = jax.random.PRNGKey(1)[None]

    def run(chunks):
        agent, step, infos = start, 0, []
        for length in chunks:
            agent, info, finite = offline_chunk(agent, buffer, data_key, step, length, 16)
            assert bool(finite[0])
            step += length
            infos.append(info)
        return agent, infos

    (plain, single_infos), (chunked, chunk_infos) = run([1] * 12), run([5, 5, 2])
    # A chunk reports each metric's mean over its updates.
    for key, value in chunk_infos[1].items():
        by_hand = np.mean([np.asarray(info[key]) for info in single_infos[5:10]], axis=0)
        np.testing.assert_allclose(np.asarray(value), by_hand, rtol=1e-4, atol=1e-6, err_msg=key)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(chunked), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6)
    # A different data key gives different parameters (the comparison above is not vacuous).
    agent_other, _, _ = offline_chunk(start, buffer, jax.random.PRNGKey(2)[None], 0, 12, 16)
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree_util.tree_leaves(plain.actor.params),
            jax.tree_util.tree_leaves(agent_other.actor.params),
            strict=True,
        )
    )
    assert diff > 1e-4


def test_online_updates_see_each_transition_only_from_its_own_step_on():
    """A chunk of 3 online transitions gives the same agent as 3 chunks of 1 (append, update, ...),
    also when the chunk fills the ring and overwrites its oldest rows (capacity 9: the last two wrap)."""
    data = _synthetic_data(n=8)
    start = _agent(data)
    new = {k: np.full((1, 3, *v.shape[1:]), 5.0, np.float32) for k, v in data.items()}  # (runs, steps, ...)
    new['rewards'] = np.array([[10.0, 20.0, 30.0]], np.float32)
    data_key = jax.random.PRNGKey(3)[None]

    def run(chunks):
        agent, buffer, step = start, GroupBuffer.of_one_task(data, capacity=9), 0
        for lo, hi in chunks:
            agent, buffer, _, finite, _ = online_chunk(
                agent, buffer, {k: v[:, lo:hi] for k, v in new.items()}, data_key, step, 16
            )
            assert bool(finite[0])
            step += hi - lo
        return agent, buffer

    (one_by_one, buffer), (together, _) = run([(0, 1), (1, 2), (2, 3)]), run([(0, 3)])
    expected = np.float32([20, 30, *data['rewards'][2:8], 10])
    np.testing.assert_array_equal(np.asarray(buffer.runs.data['rewards'][0]), expected)
    for a, b in zip(jax.tree_util.tree_leaves(one_by_one), jax.tree_util.tree_leaves(together), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6)
    # Had the final buffer been visible to the first update, its batch (and so the agent) would differ.
    final_rows = GroupBuffer.of_one_task({k: np.asarray(v[0]) for k, v in buffer.runs.data.items()})
    agent, _, _ = offline_chunk(start, final_rows, data_key, 0, 3, 16)
    first = jax.tree_util.tree_leaves(agent.critic.params)[0]
    assert not np.allclose(np.asarray(first), np.asarray(jax.tree_util.tree_leaves(together.critic.params)[0]))


def test_the_next_action_of_an_online_step_is_drawn_by_the_updated_agent_for_the_next_step():
    data = _synthetic_data(n=8)
    new = {k: np.full((1, 1, *v.shape[1:]), 0.5, np.float32) for k, v in data.items()}
    observations, act_keys = jnp.asarray(data['observations'][None, :1]), jax.random.PRNGKey(9)[None]
    buffer = GroupBuffer.of_one_task(data, capacity=12)
    step = 4  # the env step just taken was step 5: its transition is appended, then one update
    agents, _, _, _, actions = online_chunk(_agent(data), buffer, new, jax.random.PRNGKey(3)[None], step, 16,
                                            observations, act_keys)  # fmt: skip
    # The updated agent's policy, with the noise of env step 6 (index start_step + 1), as the loop draws it alone.
    np.testing.assert_array_equal(np.asarray(actions), np.asarray(policy_action(agents, observations, act_keys, 5)))
    assert not np.allclose(np.asarray(actions), np.asarray(policy_action(agents, observations, act_keys, 4)))


def test_each_env_step_of_a_call_draws_its_own_exploration_noise():
    """With K env steps per call (--online-updates-per-call K), step i of a call acts with the noise of env
    step start + i: the same state at every step gets K different actions, not one action K times."""
    from launch.training import GroupTrainer

    data = _synthetic_data(n=8)

    class SameStateEnvs:
        observations = data['observations'][:1]  # (R=1, obs)
        taken = []

        def step(self, actions):
            self.taken.append(actions[0])
            return dict(actions=actions)

    trainer = types.SimpleNamespace(
        next_actions=None, online=SameStateEnvs(), agents=_agent(data), act_keys=jax.random.PRNGKey(7)[None], step=40
    )
    transitions = GroupTrainer._collect(trainer, 4)
    assert transitions['actions'].shape == (1, 4, 2)
    taken = np.asarray(trainer.online.taken)
    assert len({a.tobytes() for a in taken}) == 4
    expected = [
        policy_action(trainer.agents, jnp.asarray(SameStateEnvs.observations), trainer.act_keys, 40 + i)
        for i in range(4)
    ]
    np.testing.assert_array_equal(taken, np.concatenate([np.asarray(a) for a in expected]))


def test_every_evaluation_of_every_run_plays_episodes_of_its_own(dataset, tmp_path, monkeypatch):
    """Each evaluation resets its env copies with seeds of its run and its step: no two evaluations replay
    the same episodes (the score averages over more start states), and no two runs of a group share them."""
    from launch import loop, training

    first_resets = []

    def evaluate(pool, act, num_episodes, run_seed_keys):
        first_resets.extend(episode_seed(*keys, 0) for keys in run_seed_keys)
        return real_evaluate(pool, act, num_episodes, run_seed_keys)

    real_evaluate = training.evaluate
    monkeypatch.setattr(training, 'evaluate', evaluate)
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '20', '--eval-every', '10']
    assert loop.main('offline', [*args, '--seeds', '0-1', '--run-dir', str(tmp_path), *SMALL]) == 0
    assert len(first_resets) == 2 * 3 == len(set(first_resets))  # 2 runs × evaluations at steps 0, 10, 20


def test_an_o2o_run_stopped_as_its_online_phase_starts_resumes_after_every_offline_update(
    dataset, tmp_path, monkeypatch, capsys
):
    """The offline phase ends with a checkpoint even off the --save-every period: a run stopped while its
    online envs start did not redo the offline updates after the last periodic save."""
    from launch import loop, training

    def stopped_at_env_start(self, pool):
        pool.close()
        raise KeyboardInterrupt

    monkeypatch.setattr(training.OnlineEnvs, 'start', stopped_at_env_start)
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '30']
    args += ['--online-steps', '10', '--save-every', '20', '--eval-every', '1000', '--updates-per-call', '10']
    assert loop.main('o2o', [*args, '--run-dir', str(tmp_path), *SMALL]) == 130
    assert load_checkpoint(str(tmp_path / 'checkpoint.msgpack'))['step'] == 30
    assert 'interrupted' in capsys.readouterr().err


class _SwallowsItsException:
    """Raises a Ctrl-C while it is deleted: Python prints "Exception ignored" and goes on, as it does for an
    exception raised in a garbage-collection callback (where JAX's own callback met real Ctrl-Cs)."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_ctrl_c_whose_exception_python_swallowed_still_stops_the_run(dataset, tmp_path, monkeypatch, capsys):
    from launch import loop, training

    real_chunk, calls = training.offline_chunk, []

    def chunk_with_a_swallowed_ctrl_c(*args, **kwargs):
        calls.append(True)
        if len(calls) == 3:  # steps 10..20 (the first chunk is step 1, for the evaluation at step 1)
            _SwallowsItsException()  # deleted at once: its Ctrl-C is raised and swallowed here
        return real_chunk(*args, **kwargs)

    monkeypatch.setattr(training, 'offline_chunk', chunk_with_a_swallowed_ctrl_c)
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '40']
    args += ['--save-every', '10', '--eval-every', '1000', '--updates-per-call', '10', '--run-dir', str(tmp_path)]
    assert loop.main('offline', [*args, *SMALL]) == 130
    assert len(calls) == 3  # stopped after the chunk the Ctrl-C came in, not trained to the end
    assert load_checkpoint(str(tmp_path / 'checkpoint.msgpack'))['step'] == 10
    assert not (tmp_path / 'final.json').exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == f'interrupted: {RERUN_TO_GO_ON}'
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


# Run as a child: the entry point, sent a stop while it imports JAX.
_STOPPED_WHILE_IMPORTING = """
import os, runpy, signal, sys

class StopAtJax:
    def find_spec(self, name, path=None, target=None):
        if name == 'jax':
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.{stop})
        return None

sys.meta_path.insert(0, StopAtJax())
sys.argv = ['launch/offline.py', *sys.argv[1:]]
runpy.run_path('launch/offline.py', run_name='__main__')
"""


@pytest.mark.parametrize('stop, code, word', [('SIGINT', 130, 'interrupted'), ('SIGTERM', 143, 'terminated')])
def test_a_stop_while_the_entry_point_imports_jax_is_one_line_and_writes_nothing(stop, code, word, tmp_path):
    """Raised inside an import, a Ctrl-C printed a traceback (or crashed the process); it now waits for the
    imports, then stops the run before it starts."""
    run_dir = tmp_path / 'run'
    command = [sys.executable, '-c', _STOPPED_WHILE_IMPORTING.format(stop=stop), '--env', 'cube-single']
    result = subprocess.run([*command, '--run-dir', str(run_dir)], cwd=REPO, capture_output=True, text=True)
    assert (result.returncode, result.stderr.strip().splitlines()) == (code, [f'{word}: {RERUN_TO_GO_ON}'])
    assert not run_dir.exists()


def test_a_resumed_runs_wall_time_adds_the_time_trained_before_the_stop(dataset, tmp_path, monkeypatch):
    from launch import loop, training

    real_save = training.GroupTrainer.save

    def save_then_stop(self):
        real_save(self)
        raise KeyboardInterrupt

    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '20']
    args += [
        '--save-every',
        '10',
        '--eval-every',
        '1000',
        '--updates-per-call',
        '10',
        '--run-dir',
        str(tmp_path),
        *SMALL,
    ]
    with monkeypatch.context() as patch:
        patch.setattr(training.GroupTrainer, 'save', save_then_stop)
        assert loop.main('offline', args) == 130
    path = str(tmp_path / 'checkpoint.msgpack')
    state = load_checkpoint(path)
    assert state['step'] == 10 and state['elapsed'] > 0
    state['elapsed'] = 5000.0  # as if the first 10 steps had taken 5000 s
    save_checkpoint(path, state)
    assert loop.main('offline', args) == 0
    assert 5000 < json.loads((tmp_path / 'final.json').read_text())['wall_time_s'] < 5000 + 600


def test_a_runs_four_keys_are_distinct_and_come_from_its_seed_alone(monkeypatch):
    keys = [np.asarray(k) for k in _run_keys(3)]
    assert len({k.tobytes() for k in keys}) == 4  # agent, data, act and eval keys all differ
    for i, key in enumerate(keys):
        np.testing.assert_array_equal(key, np.asarray(jax.random.fold_in(jax.random.PRNGKey(3), i)))
    # The trainer draws batches, exploration and evaluation noise each from its own key of the run.
    from launch import training

    monkeypatch.setattr(training, 'make_env_pool', lambda tasks: None)  # no envs: only the keys are looked at
    monkeypatch.setattr(training, 'OnlineEnvs', lambda seeds, reward_shift: None)
    task = resolve_task('cube-single', 1)
    runs = [types.SimpleNamespace(seed=s, task=task, settings=dict(eval_envs=1)) for s in (3, 4)]
    group_keys = jnp.stack([jnp.stack(_run_keys(r.seed)) for r in runs])
    trainer = training.GroupTrainer(types.SimpleNamespace(max_eval_envs=2), runs, None, None, group_keys)
    for name, column in (('data_keys', 1), ('act_keys', 2), ('eval_keys', 3)):
        np.testing.assert_array_equal(np.asarray(getattr(trainer, name)), np.asarray(group_keys[:, column]))


@pytest.mark.parametrize(('task_name', 'shift'), [('antmaze-umaze-v2', -1.0), ('cube-single', 0.0)])
def test_the_online_envs_of_a_group_shift_rewards_as_its_dataset_is(task_name, shift, monkeypatch):
    """D4RL AntMaze's rewards are shifted by -1 in the dataset (the IQL convention): the online transitions
    appended beside them must be shifted alike, so the trainer hands the family's shift to its online envs."""
    from launch import training

    given = []
    monkeypatch.setattr(training, 'make_env_pool', lambda tasks: None)
    monkeypatch.setattr(training, 'OnlineEnvs', lambda seeds, reward_shift: given.append(reward_shift))
    task = resolve_task(task_name, 1)
    runs = [types.SimpleNamespace(seed=s, task=task, settings=dict(eval_envs=1)) for s in (0, 1)]
    keys = jnp.stack([jnp.stack(_run_keys(r.seed)) for r in runs])
    training.GroupTrainer(types.SimpleNamespace(max_eval_envs=2), runs, None, None, keys)
    assert given == [shift]


def test_batches_exploration_and_evaluation_each_draw_from_their_own_key_of_the_run(monkeypatch):
    """What the trainer hands each compiled call: the runs' data keys to the offline and online updates, their act
    keys to the online step's next actions, and their eval keys to the evaluation policy, which takes each agent's
    evaluation action with noise indexed by the training step and the episode's step."""
    from launch import training

    keys = np.arange(2 * 4 * 2, dtype=np.uint32).reshape(2, 4, 2)  # 2 runs' (agent, data, act, eval) keys
    calls = []

    def offline_chunk(agents, buffer, data_keys, start_step, length, batch_size):
        calls.append(('offline batches', data_keys))
        return agents, {}, np.ones(2, bool)

    def online_chunk(agents, buffer, transitions, data_keys, start_step, batch_size, observations, act_keys, balanced):
        calls.extend([('online batches', data_keys), ('next actions', act_keys)])
        return agents, buffer, {}, np.ones(2, bool), np.zeros((2, 2), np.float32)

    def policy_action(agents, observations, keys, *indices, evaluation=False):
        calls.append(('evaluation', agents, keys, indices, evaluation))
        return jnp.zeros((*observations.shape[:-1], 2))

    monkeypatch.setattr(training, 'offline_chunk', offline_chunk)
    monkeypatch.setattr(training, 'online_chunk', online_chunk)
    monkeypatch.setattr(training, 'policy_action', policy_action)
    monkeypatch.setattr(training, 'make_env_pool', lambda tasks: None)
    args = types.SimpleNamespace(offline_steps=1, online_steps=1, log_every=1, eval_every=1, save_every=1)
    args.updates_per_call = args.online_updates_per_call = 1
    args.progress = args.balanced_sampling = False
    trainer = types.SimpleNamespace(
        args=args,
        step=0,
        runs=[types.SimpleNamespace(task=types.SimpleNamespace(name='task'))] * 2,
        buffer=None,
        agents=types.SimpleNamespace(config=types.SimpleNamespace(batch_size=4)),
        data_keys=keys[:, 1],
        act_keys=keys[:, 2],
        eval_keys=keys[:, 3],
        online=types.SimpleNamespace(start=lambda pool: None, observations=np.zeros((2, 5), np.float32)),
        _collect=lambda length: dict(observations=np.zeros((2, length, 5), np.float32)),
        _after_chunk=lambda agents, info, finite, end, phase: setattr(trainer, 'step', end),
    )
    training.GroupTrainer.train(trainer)
    assert [name for name, _ in calls] == ['offline batches', 'online batches', 'next actions']
    for (_, got), column in zip(calls, (1, 1, 2), strict=True):
        np.testing.assert_array_equal(np.asarray(got), keys[:, column])
    # Run 1 evaluated alone (its 3 copies), at training step 100 and episode step 4.
    calls.clear()
    trainer.agents, trainer.step = jnp.array([10.0, 11.0]), 100
    act = training.GroupTrainer._evaluation_policy(trainer, [1])
    assert act(np.zeros((3, 5), np.float32), 4).shape == (3, 2)
    [(_, agents, used_keys, indices, evaluation)] = calls
    np.testing.assert_array_equal(np.asarray(agents), [11.0])
    np.testing.assert_array_equal(np.asarray(used_keys), keys[1:, 3])
    assert indices == (100, 4) and evaluation is True


def test_each_evaluation_plays_the_eval_episodes_of_every_run_and_logs_each_its_own_result(monkeypatch, tmp_path):
    """--eval-episodes episodes per run (the protocol's 50), each run's result in its own log row, whatever round
    of the evaluation it was in (the end-to-end runs play a single episode)."""
    from launch import training

    success = {3: 0.25, 4: 0.75}  # by seed
    played = []

    def evaluate(pool, act, num_episodes, run_seed_keys):
        played.append((num_episodes, run_seed_keys))
        return [dict(success=success[seed], episode_return=0.0, episode_length=9.0) for seed, *_ in run_seed_keys]

    monkeypatch.setattr(training, 'evaluate', evaluate)
    monkeypatch.setattr(training, 'PoolView', lambda pool, copies: None)
    rows = [[], []]
    (tmp_path / 'config.json').write_text('{}')  # the runs' directory, still there
    task = types.SimpleNamespace(name='task')
    trainer = types.SimpleNamespace(
        args=types.SimpleNamespace(eval_episodes=50),
        step=100,
        runs=[types.SimpleNamespace(seed=s, task=task, run_dir=str(tmp_path)) for s in (3, 4)],
        eval_rounds=[([1], [0, 1]), ([0], [0, 1])],  # run 1 first, on the same 2 copies as run 0 after it
        eval_pool=None,
        _evaluation_policy=lambda indices: None,
        loggers=[types.SimpleNamespace(log=lambda kind, row, r=r: rows[r].append((kind, row))) for r in (0, 1)],
        bar=types.SimpleNamespace(write=lambda text: None),
    )
    training.GroupTrainer._evaluate(trainer, 'online')
    assert played == [(50, [(4, 1, 100)]), (50, [(3, 1, 100)])]
    for r, seed in enumerate((3, 4)):
        expected = dict(step=100, phase='online', success=success[seed], episode_return=0.0, episode_length=9.0)
        assert rows[r] == [('eval', expected)]


def test_each_runs_log_row_has_its_own_online_episodes_and_the_rate_over_the_whole_interval(monkeypatch, tmp_path):
    """An O2O group's train rows at a --log-every boundary: each run's own metrics and finished episodes, and the
    env steps per second since the last row (every chunk of the interval), not over its last chunk alone."""
    from launch import training

    monkeypatch.setattr(training, 'make_env_pool', lambda tasks: None)  # no envs: the online episodes are set here
    task = resolve_task('cube-single', 1)
    (tmp_path / 'config.json').write_text('{}')  # the runs' directory, still there
    runs = [types.SimpleNamespace(seed=s, task=task, settings=dict(eval_envs=1), run_dir=str(tmp_path)) for s in (0, 1)]
    args = types.SimpleNamespace(max_eval_envs=2, offline_steps=100, online_steps=900, log_every=20)
    args.eval_every = args.save_every = 1000
    trainer = training.GroupTrainer(args, runs, None, None, np.zeros((2, 4, 2), np.uint32))
    clock = iter([1010.0, 1015.0])  # read by the rows at steps 120 and 140 (the last row: 1000 s, step 100)
    monkeypatch.setattr(training, 'time', types.SimpleNamespace(time=lambda: next(clock)))
    rows = [[], []]
    trainer.loggers = [types.SimpleNamespace(log=lambda kind, row, r=r: rows[r].append((kind, row))) for r in (0, 1)]
    trainer.bar, trainer.log_step, trainer.log_time = types.SimpleNamespace(update=lambda n: None), 100, 1000.0
    every_run = np.ones(2, bool)
    trainer._after_chunk(None, dict(critic_loss=np.array([1.0, 2.0])), every_run, 110, 'online')
    assert rows == [[], []]  # not a logging step
    trainer.online.episode_index = [3, 1]  # run 0 finished its third episode during the interval, run 1 its first
    trainer.online.recent_episodes = [[(1.0, 5.0, 200.0)], [(0.0, 2.0, 200.0)]]
    trainer._after_chunk(None, dict(critic_loss=np.array([1.5, 2.5])), every_run, 120, 'online')
    rate = 20 / 10  # the interval's 20 steps in its 10 s
    shared = dict(step=120, phase='online', online_length=200.0, steps_per_s=rate)
    assert rows[0] == [
        ('train', dict(shared, critic_loss=1.5, online_success=1.0, online_return=5.0, online_episodes=3))
    ]
    assert rows[1] == [
        ('train', dict(shared, critic_loss=2.5, online_success=0.0, online_return=2.0, online_episodes=1))
    ]
    # The next interval counts from this row: 20 steps in 5 s, and no episode finished in it.
    trainer._after_chunk(None, dict(critic_loss=np.array([1.0, 2.0])), every_run, 140, 'online')
    assert [rows[r][-1][1] for r in (0, 1)] == [
        dict(step=140, phase='online', critic_loss=loss, steps_per_s=20 / 5) for loss in (1.0, 2.0)
    ]


def test_each_phase_ends_with_an_evaluation_whatever_the_period():
    from launch.training import _is_eval_step

    args = types.SimpleNamespace(offline_steps=30, online_steps=50, eval_every=100)
    assert [s for s in range(1, 81) if _is_eval_step(s, args)] == [1, 30, 80]
    # Every multiple of the period, in both phases (the online score is the mean of the phase's last three).
    args = types.SimpleNamespace(offline_steps=30, online_steps=50, eval_every=20)
    assert [s for s in range(1, 81) if _is_eval_step(s, args)] == [1, 20, 30, 40, 60, 80]


def test_a_save_cut_short_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / 'checkpoint.msgpack'
    save_checkpoint(str(path), dict(step=1))
    before = path.read_bytes()

    def killed(*args):  # the process dies after writing the new checkpoint's bytes, before it is in place
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(path), dict(step=2, weights=np.zeros(1000, np.float32)))
    assert path.read_bytes() == before and load_checkpoint(str(path))['step'] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ['checkpoint.msgpack']  # no temporary file left


def test_checkpoint_round_trip_and_damage(tmp_path):
    path = tmp_path / 'checkpoint.msgpack'
    state = dict(step=7, weights=np.arange(6, dtype=np.float32).reshape(2, 3), rows={'eval': [{'step': 1}]})
    save_checkpoint(str(path), state)
    loaded = load_checkpoint(str(path))
    assert loaded['step'] == 7 and loaded['rows'] == {'eval': [{'step': 1}]}
    np.testing.assert_array_equal(loaded['weights'], state['weights'])
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # a save cut short
    with pytest.raises(CheckpointError, match='damaged'):
        load_checkpoint(str(path))
    path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # one flipped bit
    with pytest.raises(CheckpointError, match='damaged'):
        load_checkpoint(str(path))
    path.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='not a FAV-RL checkpoint'):
        load_checkpoint(str(path))
    path.write_bytes(blob[:20])  # cut short within its header (the magic, then part of the checksum)
    with pytest.raises(CheckpointError, match='not a FAV-RL checkpoint'):
        load_checkpoint(str(path))


@pytest.mark.parametrize('phase', ['writing', 'renaming'])
def test_a_group_save_killed_midway_resumes_every_run_at_one_step(phase, tmp_path, monkeypatch):
    """A kill between two runs' saves: while the new checkpoints are written, the group resumes from
    the previous save; once they are all written and being renamed into place, from the new one."""
    import launch.checkpoint as checkpoint

    paths = [str(tmp_path / f'seed{seed}' / 'checkpoint.msgpack') for seed in range(3)]
    for path in paths:
        os.makedirs(os.path.dirname(path))
    checkpoint.save_group_checkpoints(paths, 40, (dict(step=40, seed=s) for s in range(3)))

    def states():
        for seed in range(3):
            if phase == 'writing' and seed == 2:
                raise KeyboardInterrupt  # seeds 0 and 1 written, seed 2 not
            yield dict(step=80, seed=seed)

    real_replace, renamed = os.replace, []

    def replace(source, target):  # os.replace, also the one that atomic_write calls
        if str(target).endswith('checkpoint.msgpack'):  # a new checkpoint renamed into place
            if phase == 'renaming' and len(renamed) == 1:
                raise KeyboardInterrupt  # seed 0 renamed, seeds 1 and 2 not
            renamed.append(target)
        real_replace(source, target)

    monkeypatch.setattr(checkpoint.os, 'replace', replace)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_group_checkpoints(paths, 80, states())
    monkeypatch.setattr(checkpoint.os, 'replace', real_replace)
    loaded = checkpoint.load_group_checkpoints(paths)
    step = 40 if phase == 'writing' else 80
    assert [(c['step'], c['seed']) for c in loaded] == [(step, 0), (step, 1), (step, 2)]
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['checkpoint.msgpack'] * 3 + ['seed0', 'seed1', 'seed2']
    assert [c['step'] for c in checkpoint.load_group_checkpoints(paths)] == [step] * 3  # settled: loads alike


def test_a_long_file_without_the_checkpoint_header_is_not_a_checkpoint(tmp_path):
    # A bare msgpack state of 45 bytes or more (the header's length): refused for its header, not read as damaged.
    path = tmp_path / 'checkpoint.msgpack'
    path.write_bytes(serialization.msgpack_serialize(dict(step=7, weights=np.zeros(64, np.float32))))
    with pytest.raises(CheckpointError, match='not a FAV-RL checkpoint'):
        load_checkpoint(str(path))


def test_a_group_load_settles_on_the_newest_pending_step_and_drops_older_pending_files(tmp_path):
    import launch.checkpoint as checkpoint

    # Every run has its checkpoint at 40 and pending files at 80 and 120 (a save left unsettled): all written
    # at 120, so every run resumes at 120 and no pending file is left.
    paths = [str(tmp_path / f'seed{seed}' / 'checkpoint.msgpack') for seed in range(2)]
    for seed, path in enumerate(paths):
        os.makedirs(os.path.dirname(path))
        save_checkpoint(path, dict(step=40, seed=seed))
        for step in (80, 120):
            save_checkpoint(f'{path}.next-{step}', dict(step=step, seed=seed))
    loaded = checkpoint.load_group_checkpoints(paths)
    assert [(c['step'], c['seed']) for c in loaded] == [(120, 0), (120, 1)]
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['checkpoint.msgpack'] * 2 + ['seed0', 'seed1']


def test_a_group_load_with_one_run_pending_an_older_step_keeps_every_run_at_the_previous_save(tmp_path):
    import launch.checkpoint as checkpoint

    # Runs 0 and 1 have a pending checkpoint at 80, run 2 only one at 60: the save at 80 was not written for
    # every run, so all resume from their checkpoints at 40 and every pending file goes.
    paths = [str(tmp_path / f'seed{seed}' / 'checkpoint.msgpack') for seed in range(3)]
    for seed, path in enumerate(paths):
        os.makedirs(os.path.dirname(path))
        save_checkpoint(path, dict(step=40, seed=seed))
        save_checkpoint(f'{path}.next-{80 if seed < 2 else 60}', dict(step=80 if seed < 2 else 60, seed=seed))
    loaded = checkpoint.load_group_checkpoints(paths)
    assert [(c['step'], c['seed']) for c in loaded] == [(40, 0), (40, 1), (40, 2)]
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['checkpoint.msgpack'] * 3 + ['seed0', 'seed1', 'seed2']


def test_a_group_load_leaves_alone_files_named_like_a_pending_save_without_a_step(tmp_path):
    import launch.checkpoint as checkpoint

    # A user's copy of a pending save: its name has no step after '.next-' (int() of it was a ValueError traceback).
    path = tmp_path / 'checkpoint.msgpack'
    save_checkpoint(str(path), dict(step=40))
    copy = tmp_path / 'checkpoint.msgpack.next-80.bak'
    copy.write_bytes(b'kept')
    assert [c['step'] for c in checkpoint.load_group_checkpoints([str(path)])] == [40]
    assert copy.read_bytes() == b'kept'


def test_policy_action_folds_the_indices_into_each_runs_key_and_evaluates_with_eval_actions():
    data = _synthetic_data()
    observations = jnp.asarray(data['observations'][:6].reshape(2, 3, 5))  # 2 runs, 3 copies each
    keys = jnp.stack([jax.random.PRNGKey(10), jax.random.PRNGKey(11)])

    def stacked(agents):  # as the loop stacks them: on one template (its apply_fns, static fields)
        same = [serialization.from_state_dict(agents[0], serialization.to_state_dict(a)) for a in agents]
        return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *same)

    iql = [
        IQLAgent.create(s, data['observations'][:1], data['actions'][:1], IQLConfig(hidden_dims=(8,))) for s in (0, 1)
    ]
    fav = [
        FAVAgent.create(s, data['observations'][:1], data['actions'][:1], FAVConfig(hidden_dims=(8,))) for s in (0, 1)
    ]
    for agents in (iql, fav):
        exploring = policy_action(stacked(agents), observations, keys, 7, 2)
        for r, agent in enumerate(agents):
            key = jax.random.fold_in(jax.random.fold_in(keys[r], 7), 2)
            np.testing.assert_allclose(exploring[r], agent.sample_actions(observations[r], key), atol=1e-6)
    # IQL is evaluated with its Gaussian's mean (no noise: any key gives it); FAV, with no eval_actions,
    # with its own samples.
    evaluated = policy_action(stacked(iql), observations, keys, 7, 2, evaluation=True)
    for r, agent in enumerate(iql):
        np.testing.assert_allclose(evaluated[r], agent.eval_actions(observations[r], None), atol=1e-6)
    assert not np.allclose(evaluated, policy_action(stacked(iql), observations, keys, 7, 2))
    np.testing.assert_array_equal(
        policy_action(stacked(fav), observations, keys, 7, 2, evaluation=True),
        policy_action(stacked(fav), observations, keys, 7, 2),
    )


@pytest.mark.parametrize('text, value', [('False', False), ('false', False), ('0', False), ('TRUE', True), ('1', True)])
def test_agent_settings_are_read_as_their_fields_type(text, value):
    base = ['--env', 'cube-single', '--agent', 'fql']
    args = parse_args(
        [*base, f'--agent.normalize_q_loss={text}', '--agent.alpha=3', '--agent.hidden_dims=[8, 16]'], 'o2o'
    )
    assert args.agent_overrides == dict(normalize_q_loss=value, alpha=3.0, hidden_dims=(8, 16))
    assert type(args.agent_overrides['normalize_q_loss']) is bool and type(args.agent_overrides['alpha']) is float
    with pytest.raises(UserError, match=r'--agent.normalize_q_loss=yes: expected true or false$'):
        parse_args([*base, '--agent.normalize_q_loss=yes'], 'o2o')
    with pytest.raises(UserError, match=r'--agent.hidden_dims=64,x: expected integers like 512,512,512,512$'):
        parse_args([*base, '--agent.hidden_dims=64,x'], 'o2o')  # as it is written on the command line
    for text in ('32,,32', '32,'):  # an empty item is a typo, not a layer less
        with pytest.raises(UserError, match=f'--agent.hidden_dims={text}: expected integers like 512,512,512,512$'):
            parse_args([*base, f'--agent.hidden_dims={text}'], 'o2o')


@pytest.mark.parametrize('agent', sorted(AGENTS))
def test_every_float_agent_setting_refuses_inf_naming_the_field(agent):
    family = resolve_task('cube-single').family
    floats = [f.name for f in dataclasses.fields(AGENTS[agent].Config) if isinstance(f.default, float)]
    for name in floats:
        for value in (math.inf, -math.inf):
            with pytest.raises(ValueError, match=f'^agent.{name} must be '):
                AGENTS[agent].get_config(family, {name: value})
    with pytest.raises(ValueError, match='^agent.lr must be finite, got inf$'):  # lr > 0 alone lets inf through
        AGENTS[agent].get_config(family, {'lr': math.inf})


@pytest.mark.parametrize('agent', sorted(AGENTS))
def test_every_agent_refuses_no_hidden_layer_a_layer_of_width_0_and_a_tau_above_1(agent):
    family = resolve_task('cube-single').family
    for hidden_dims in ((), (64, 0)):
        with pytest.raises(ValueError, match=r'^agent.hidden_dims must be positive widths like 512,512, got \('):
            AGENTS[agent].get_config(family, {'hidden_dims': hidden_dims})
    assert AGENTS[agent].get_config(family, {'tau': 1.0}).tau == 1.0  # every agent has one: 1 is a hard copy
    with pytest.raises(ValueError, match=r'^agent.tau must be in \(0, 1\], got 1.5$'):
        AGENTS[agent].get_config(family, {'tau': 1.5})


def test_an_agent_setting_given_twice_takes_the_last_value():
    args = parse_args(['--env', 'cube-single', '--agent', 'fql', '--agent.alpha=3', '--agent.alpha=5'], 'offline')
    assert args.agent_overrides == dict(alpha=5.0)  # as argparse reads --offline-steps given twice


def test_each_run_of_a_group_mirrors_to_its_own_wandb_run(tmp_path, monkeypatch):
    """A group's runs log from one process: each gets its own wandb run (not the first one's), in its own
    directory, with its own settings, and a resumed run continues its wandb run."""
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setenv('HOME', str(tmp_path))  # wandb's own debug logs go to ~/.cache: not the user's
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    dirs = [tmp_path / 'seed0', tmp_path / 'seed1']
    loggers = []
    for seed, run_dir in enumerate(dirs):
        run_dir.mkdir()
        loggers.append(RunLogger(str(run_dir), 'offline', dict(seed=seed), alone=False))
    runs = [logger.wandb_run for logger in loggers]
    assert runs[0] is not runs[1] and runs[0].id != runs[1].id
    assert [run.settings.console for run in runs] == ['off', 'off']  # not N copies of the group's console
    logged = {run.id: [] for run in runs}
    for run in runs:
        monkeypatch.setattr(run, 'log', lambda data, step, run=run: logged[run.id].append((step, data)))
    for seed, logger in enumerate(loggers):
        logger.log('train', dict(step=10, phase='offline', critic_loss=float(seed)))
        assert Path(runs[seed].dir).is_relative_to(dirs[seed]) and runs[seed].config['seed'] == seed
    assert [logged[run.id] for run in runs] == [
        [(10, {'train/phase': 'offline', 'train/critic_loss': float(seed)})] for seed in (0, 1)
    ]
    for logger in loggers:
        logger.finish()
    resumed = RunLogger(str(dirs[1]), 'offline', dict(seed=1), rows=loggers[1].rows, wandb_id=loggers[1].wandb_id)
    assert resumed.wandb_run.id == runs[1].id and resumed.wandb_run.settings.console != 'off'
    resumed.finish()
    # Trained again from step 0 in the same directory (deleted, or its checkpoint was): a wandb run of its own,
    # whose steps from 0 wandb would otherwise drop as lower than the old run's.
    again = RunLogger(str(dirs[1]), 'offline', dict(seed=1))
    assert again.wandb_run.id not in (runs[0].id, runs[1].id)
    again.finish()
    # A checkpoint from before the id was kept in it: the id the run had then, from its directory's path.
    old = RunLogger(str(dirs[1]), 'offline', dict(seed=1), rows=loggers[1].rows)
    assert old.wandb_id == hashlib.sha1(os.path.abspath(dirs[1]).encode()).hexdigest()[:16]
    old.finish()


def test_a_runs_checkpoint_keeps_its_wandb_id_for_the_resume(dataset, tmp_path, monkeypatch):
    """The id of the run's wandb run goes into its checkpoint, and a resume hands it to its logger."""
    from launch import loop

    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    made = []
    monkeypatch.setattr(loop, 'RunLogger', lambda *a, **k: made.append(RunLogger(*a, **k)) or made[-1])
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '20', '--eval-every', '20']
    args += ['--save-every', '10', '--wandb', 'offline', '--run-dir', str(tmp_path / 'r'), *SMALL]
    assert loop.main('offline', args) == 0
    wandb_id = made[0].wandb_id
    assert load_checkpoint(str(tmp_path / 'r' / 'checkpoint.msgpack'))['wandb_id'] == wandb_id
    assert list((tmp_path / 'r' / 'wandb').glob(f'offline-run-*-{wandb_id}'))
    (tmp_path / 'r' / 'final.json').unlink()  # as if killed after its last checkpoint: the rerun resumes
    assert loop.main('offline', args) == 0
    assert len(made) == 2 and made[1].wandb_id == wandb_id


@pytest.mark.parametrize('wandb_step, sent_steps', [(50, [50, 50, 75]), (0, [1, 25, 50, 50, 75])])
def test_a_resumed_run_sends_wandb_the_checkpoints_rows_it_may_not_have(wandb_step, sent_steps, tmp_path, monkeypatch):
    """SIGKILL takes wandb's unsent rows with it while the checkpoint keeps them: on resume the logger sends the
    restored rows from the wandb run's current step on (online: where the server's history ends; offline: 0,
    a new local record), train and eval merged in step order, since wandb drops a step below its current one."""

    class FakeRun:
        step = wandb_step

        def __init__(self):
            self.sent = []

        def log(self, data, step):
            self.sent.append((step, data))

    fake = types.SimpleNamespace(init=lambda **kwargs: FakeRun(), Settings=lambda **kwargs: kwargs)
    monkeypatch.setitem(sys.modules, 'wandb', fake)
    rows = dict(
        train=[dict(step=s, phase='offline', critic_loss=s / 100) for s in (25, 50, 75)],
        eval=[dict(step=s, phase='offline', success=s / 100) for s in (1, 50)],
    )
    logger = RunLogger(str(tmp_path), 'offline', {}, rows=rows)
    assert [step for step, _ in logger.wandb_run.sent] == sent_steps
    assert logger.wandb_run.sent[-3:] == [
        (50, {'train/phase': 'offline', 'train/critic_loss': 0.5}),
        (50, {'eval/phase': 'offline', 'eval/success': 0.5}),
        (75, {'train/phase': 'offline', 'train/critic_loss': 0.75}),
    ]
    logger.log('train', dict(step=100, phase='offline', critic_loss=1.0))  # then the new rows, as before
    assert logger.wandb_run.sent[-1] == (100, {'train/phase': 'offline', 'train/critic_loss': 1.0})


def test_only_a_run_training_alone_gives_its_logger_the_console(dataset, tmp_path, monkeypatch):
    """A group's runs share one process and its console: their loggers are made with alone=False, a single
    run's with alone=True."""
    from launch import loop

    made = []

    def logger(run_dir, *args, alone=True, **kwargs):
        made.append((Path(run_dir).name, alone))
        return RunLogger(run_dir, *args, alone=alone, **kwargs)

    monkeypatch.setattr(loop, 'RunLogger', logger)
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '2', *SMALL]
    assert loop.main('offline', [*args, '--seeds', '0-1', '--run-dir', str(tmp_path / 'g')]) == 0
    assert made == [('seed0', False), ('seed1', False)]
    made.clear()
    assert loop.main('offline', [*args, '--seed', '0', '--run-dir', str(tmp_path / 'alone')]) == 0
    assert made == [('alone', True)]


def _csv_rows(path):
    with open(path, newline='') as f:
        return list(csv.reader(f))


def test_a_run_logger_rewrites_its_csvs_whole_step_and_phase_first(tmp_path):
    """A resumed run's logger starts from the checkpoint's rows, whose keys come back sorted: the CSVs are
    rewritten from them at once (dropping rows a killed process logged after its last checkpoint), with
    every row and a fixed column order."""
    (tmp_path / 'train.csv').write_text('step,phase,actor_loss\n1,offline,0.5\n2,offline,0.4\n')
    restored = {'train': [dict(actor_loss=0.5, critic_loss=2.0, phase='offline', step=1)], 'eval': []}
    logger = RunLogger(str(tmp_path), rows=restored)
    header = ['step', 'phase', 'actor_loss', 'critic_loss']
    assert _csv_rows(tmp_path / 'train.csv') == [header, ['1', 'offline', '0.5', '2.0']]
    assert (tmp_path / 'eval.csv').exists()
    logger.log('train', dict(step=2, phase='offline', critic_loss=1.5, actor_loss=0.25))
    logger.log('eval', dict(step=2, phase='offline', success=1.0))
    assert _csv_rows(tmp_path / 'train.csv') == [
        header,
        ['1', 'offline', '0.5', '2.0'],
        ['2', 'offline', '0.25', '1.5'],
    ]
    assert _csv_rows(tmp_path / 'eval.csv') == [['step', 'phase', 'success'], ['2', 'offline', '1.0']]


def test_a_run_loggers_other_columns_are_in_name_order_whatever_the_rows_order(tmp_path):
    logger = RunLogger(str(tmp_path))
    logger.log('train', dict(zeta=1, phase='offline', eta=2, step=5, beta=3, alpha=4, mu=5))
    assert _csv_rows(tmp_path / 'train.csv')[0] == ['step', 'phase', 'alpha', 'beta', 'eta', 'mu', 'zeta']


def test_a_json_file_a_failed_write_was_to_replace_is_kept_whole(tmp_path):
    """config.json, final.json: a write that fails midway (here on a value JSON cannot hold) leaves the file
    as it was, not cut short."""
    path = tmp_path / 'final.json'
    write_json(str(path), {'score': 1.0})
    with pytest.raises(TypeError):
        write_json(str(path), {'score': 2.0, 'wall_time_s': object()})
    assert read_json(str(path)) == {'score': 1.0}


def test_wandb_asked_for_but_missing_is_one_line(tmp_path, monkeypatch, capsys):
    from launch.loop import main

    monkeypatch.setitem(sys.modules, 'wandb', None)  # as if not installed
    assert main('offline', [*NOWHERE, '--wandb', 'offline', '--run-dir', str(tmp_path / 'r')]) == 2
    assert not (tmp_path / 'r').exists()
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ['error: --wandb offline needs wandb: pip install -e ".[wandb]" (or drop --wandb)']


def test_a_wandb_variable_wandb_refuses_is_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from launch.loop import main

    monkeypatch.setenv('WANDB_MODE', '')  # wandb would raise its validation error at the first run's start
    assert main('offline', [*NOWHERE, '--wandb', 'offline', '--run-dir', str(tmp_path / 'r')]) == 2
    assert not (tmp_path / 'r').exists()
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: --wandb offline: the environment sets WANDB_MODE to a value wandb refuses (')
    assert line.endswith('); fix or unset it') and "'offline'" in line  # wandb's own list of modes


def test_wandb_online_without_credentials_is_one_line_before_anything_is_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('WANDB_')}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / 'netrc'))  # no ~/.netrc, no wandb settings
    run_dir = tmp_path / 'r'
    small = ['--dataset-episodes', '1', '--offline-steps', '2', '--eval-every', '2', *SMALL]  # if it got past
    command = [sys.executable, 'launch/offline.py', '--env', 'cube-single', '--wandb', 'online', *small]
    command += ['--run-dir', run_dir]
    result = subprocess.run(
        command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and not run_dir.exists()
    [line] = result.stderr.strip().splitlines()  # wandb's own reason between the two parts
    assert line.startswith('error: --wandb online: wandb has no usable credentials (') and 'API key' in line
    assert line.endswith('); set WANDB_API_KEY or use --wandb offline')


@pytest.mark.parametrize('mode', ['offline', 'o2o'])
def test_final_score_is_the_mean_success_of_the_last_three_evaluations_of_each_phase(mode, tmp_path):
    """The protocol: a phase's score is 100 × the mean success of its last 3 evaluations (fewer if it had
    fewer); an O2O run's score is its online one."""
    offline = [0.9, 0.1, 0.2, 0.4]  # the first must drop out of the window
    online = [0.0, 0.5]  # fewer than 3
    evals = [dict(step=i, phase='offline', success=s) for i, s in enumerate(offline)]
    if mode == 'o2o':
        evals += [dict(step=10 + i, phase='online', success=s) for i, s in enumerate(online)]
    run = types.SimpleNamespace(
        task=types.SimpleNamespace(name='t'), settings=dict(agent='fav'), seed=3, run_dir=str(tmp_path)
    )
    final = _write_final(run, mode, evals, steps=12, elapsed=1.0)
    assert final == json.loads((tmp_path / 'final.json').read_text())
    offline_score = 100 * (0.1 + 0.2 + 0.4) / 3
    if mode == 'offline':
        assert final['score'] == pytest.approx(offline_score)
    else:
        assert final['offline_score'] == pytest.approx(offline_score)
        assert final['online_score'] == final['score'] == pytest.approx(100 * 0.25)
    assert (final['seed'], final['steps'], final['mode']) == (3, 12, mode)


def _scores_from_eval_csv(run_dir):
    """{phase: 100 × mean success of its last 3 rows of eval.csv}: the score a reader would compute."""
    with open(os.path.join(run_dir, 'eval.csv')) as f:
        rows = list(csv.DictReader(f))
    phases = dict.fromkeys(r['phase'] for r in rows)
    return {p: 100 * np.mean([float(r['success']) for r in rows if r['phase'] == p][-3:]) for p in phases}


# ------------------------------------------------------------------------------------------------
# Whole runs on a tiny generated dataset


@pytest.mark.slow
def test_offline_run_end_to_end_and_resume_after_kill(dataset, tmp_path):
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset]
    args += '--offline-steps 300 --eval-every 150 --save-every 50 --log-every 50 --updates-per-call 25'.split() + SMALL
    args += ['--eval-episodes', '2']  # two env copies, in worker processes
    whole = str(tmp_path / 'whole')
    result = launch('offline', *args, '--run-dir', whole)
    assert result.returncode == 0, result.stderr
    final = json.loads(Path(whole, 'final.json').read_text())
    assert 0 <= final['score'] <= 100 and final['steps'] == 300 and final['task'].endswith('task1-v0')
    assert final['score'] == pytest.approx(_scores_from_eval_csv(whole)['offline'])
    config = json.loads(Path(whole, 'config.json').read_text())
    assert config['success_timing'] == 'post' and config['agent_config']['hidden_dims'] == [32, 32]
    assert config['agent_config']['sigma'] == 0.05  # cube-single's σ from the registry
    assert config['buffer_capacity'] == 400  # offline: just the dataset (2 episodes of 200 transitions)
    assert config['dataset_origin'] == 'given'  # --dataset
    evals = Path(whole, 'eval.csv').read_text().splitlines()
    assert [line.split(',')[0] for line in evals[1:]] == ['1', '150', '300']
    train_rows = Path(whole, 'train.csv').read_text().splitlines()
    assert len(train_rows) == 1 + 6 and 'actor_loss' in train_rows[0] and 'phi_norm' in train_rows[0]

    killed = str(tmp_path / 'killed')
    run_killed_then_resumed('offline', args, killed, kill_after_step=100)
    assert_same_result(whole, killed)

    # Rerunning a finished run changes nothing; other settings into the same directory are refused.
    again = launch('offline', *args, '--run-dir', whole)
    assert again.returncode == 0 and 'complete' in again.stdout
    other = launch('offline', *args, '--seed', '1', '--run-dir', whole)
    assert other.returncode == 2 and 'seed' in other.stderr and len(other.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_o2o_run_end_to_end(dataset, tmp_path):
    args = ['--env', 'cube-single-play-singletask-task1-v0', '--dataset', dataset]
    args += '--offline-steps 100 --online-steps 300 --eval-every 100 --save-every 300 --log-every 80'.split()
    # 400 dataset rows in a ring of 500: online steps from the 101st on overwrite the oldest rows.
    args += ['--updates-per-call', '50', '--buffer-capacity', '500', *SMALL]
    args += ['--eval-episodes', '2']  # two env copies, in worker processes
    whole = str(tmp_path / 'whole')
    result = launch('o2o', *args, '--run-dir', whole)
    assert result.returncode == 0, result.stderr
    final = json.loads(Path(whole, 'final.json').read_text())
    assert 0 <= final['offline_score'] <= 100 and 0 <= final['online_score'] <= 100 and final['steps'] == 400
    scores = _scores_from_eval_csv(whole)
    assert final['offline_score'] == pytest.approx(scores['offline'])
    assert final['online_score'] == final['score'] == pytest.approx(scores['online'])
    rows = [r.split(',')[:2] for r in Path(whole, 'train.csv').read_text().splitlines()[1:]]
    # Every --log-every steps, and at the end of each phase (the offline phase's end is not a multiple of 80).
    expected = [('80', 'offline'), ('100', 'offline'), ('160', 'online'), ('240', 'online'), ('320', 'online')]
    assert [tuple(r) for r in rows] == [*expected, ('400', 'online')]
    header = Path(whole, 'train.csv').read_text().splitlines()[0]
    assert 'online_success' in header  # 200-step episodes: at least one finished in the online phase
    assert json.loads(Path(whole, 'config.json').read_text())['buffer_capacity'] == 500
    # Saved at the end of the run, though 400 is not a multiple of --save-every.
    assert load_checkpoint(str(Path(whole, 'checkpoint.msgpack')))['step'] == 400
    # Killed and resumed: in the group test below (the same loop for one run or several).


@pytest.mark.slow
def test_non_finite_loss_stops_with_step_and_metric(dataset, tmp_path):
    run_dir = str(tmp_path / 'nan')
    result = launch(
        'offline',
        '--env',
        'cube-single',
        '--task',
        '1',
        '--dataset',
        dataset,
        '--offline-steps',
        '200',
        '--eval-every',
        '1000',
        '--save-every',
        '10',
        '--updates-per-call',
        '10',
        '--agent.lr=1e30',
        '--run-dir',
        run_dir,
        *SMALL,
    )
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    # The metric named is a loss, or FAV's after-step residual, which sees the updated parameters first.
    assert 'non-finite' in message and 'step' in message and ('loss' in message or 'residual_after' in message)
    assert not os.path.exists(os.path.join(run_dir, 'final.json'))
    # The message names the last good checkpoint, if one was saved before the divergence; what it names
    # is there, loads and holds finite parameters.
    checkpoint = os.path.join(run_dir, 'checkpoint.msgpack')
    assert os.path.exists(checkpoint) == message.endswith(f'last good checkpoint kept at {checkpoint}')
    assert os.path.exists(checkpoint) != message.endswith('last good checkpoint kept at (none yet)')
    if os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint)
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(state['agent']))


def test_parameters_made_non_finite_by_a_chunks_last_update_are_not_finite():
    """The metrics of an update see the parameters before it: an update whose result is non-finite while its
    metrics are finite (a learning rate that overflows them) passed, and its chunk was saved as the last good
    checkpoint. The state is checked before each checkpoint (training.py), not in the chunk."""
    from flax import struct

    @struct.dataclass
    class OverflowsAtItsThirdUpdate:
        weight: jax.Array
        updates: jax.Array

        def update(self, batch):
            weight = jnp.where(self.updates == 2, jnp.inf, self.weight + batch['rewards'].mean())
            return self.replace(weight=weight, updates=self.updates + 1), {'loss': self.weight}

    rows = 8
    data = dict(
        observations=np.zeros((rows, 2), np.float32),
        actions=np.zeros((rows, 1), np.float32),
        next_observations=np.zeros((rows, 2), np.float32),
        rewards=np.ones(rows, np.float32),
        masks=np.ones(rows, np.float32),
        terminals=np.zeros(rows, np.float32),
    )
    buffer, keys = GroupBuffer.of_one_task(data, runs=2), jax.random.split(jax.random.PRNGKey(0), 2)
    agents = OverflowsAtItsThirdUpdate(weight=jnp.zeros(2), updates=jnp.array([0, 1]))  # run 1 is one update ahead
    agents, info, finite = offline_chunk(agents, buffer, keys, 0, 2, 4)
    assert np.isfinite(np.asarray(info['loss'])).all() and np.asarray(finite).all()  # the metrics never see it
    assert np.asarray(states_finite(agents)).tolist() == [True, False]  # run 1's second update overflowed its weight


def test_a_checkpoint_is_never_written_with_non_finite_parameters(dataset, tmp_path, monkeypatch, capsys):
    """The chunk ending at a save left the parameters non-finite, with finite metrics: the run stops there,
    keeping the checkpoint before."""
    from launch import loop, training

    real_chunk = training.offline_chunk

    def chunk(agents, buffer, data_keys, start_step, length, batch_size, balanced=False):
        agents, info, finite = real_chunk(agents, buffer, data_keys, start_step, length, batch_size, balanced)
        if start_step + length == 20:
            nan = lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
            agents = jax.tree_util.tree_map(nan, agents)
        return agents, info, finite

    monkeypatch.setattr(training, 'offline_chunk', chunk)
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '40', '--eval-every', '40']
    args += ['--save-every', '10', '--log-every', '10', '--updates-per-call', '10', *SMALL]
    assert loop.main('offline', [*args, '--run-dir', str(tmp_path / 'run')]) == 1
    assert 'non-finite parameters at steps 11..20 of' in capsys.readouterr().err
    assert load_checkpoint(str(tmp_path / 'run' / 'checkpoint.msgpack'))['step'] == 10


def test_runs_of_a_group_diverging_together_each_keep_their_own_message_and_the_others_finish(
    dataset, tmp_path, monkeypatch, capsys
):
    """Seeds 1 and 2 of a 3-run group report non-finite values in the same chunk: each stopped.json names its own
    run (not the group's message, which names the first and counts the rest), and seed 0 trains to the end."""
    from launch import loop, training

    real_chunk = training.offline_chunk

    def chunk(agents, buffer, data_keys, start_step, length, batch_size, balanced=False):
        agents, info, finite = real_chunk(agents, buffer, data_keys, start_step, length, batch_size, balanced)
        if len(finite) == 3 and start_step + length > 20:
            finite = finite.at[1:].set(False)
        return agents, info, finite

    monkeypatch.setattr(training, 'offline_chunk', chunk)
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '40', '--eval-every', '40']
    args += ['--save-every', '10', '--log-every', '10', '--updates-per-call', '10', *SMALL]
    assert loop.main('offline', [*args, '--seeds', '0-2', '--run-dir', str(tmp_path / 'g')]) == 1
    group = tmp_path / 'g' / 'cube-single-play-singletask-task1-v0'
    assert 'the 1 other run(s) go on from their checkpoints' in capsys.readouterr().err
    for seed in (1, 2):
        error = json.loads((group / f'seed{seed}' / 'stopped.json').read_text())['error']
        assert error.startswith(f'non-finite parameters at steps 21..30 of {group / f"seed{seed}"}; stopped'), error
        assert 'other run(s)' not in error
        assert load_checkpoint(str(group / f'seed{seed}' / 'checkpoint.msgpack'))['step'] == 20
    assert json.loads((group / 'seed0' / 'final.json').read_text())['steps'] == 40
    assert not (group / 'seed0' / 'stopped.json').exists()


@pytest.mark.slow
def test_a_diverging_run_stops_alone_and_the_rest_of_its_group_finishes(dataset, tmp_path, monkeypatch, capsys):
    from launch import loop, training
    from launch.run_plan import code_version

    real_chunk = training.offline_chunk

    def chunk(agents, buffer, data_keys, start_step, length, batch_size, balanced=False):
        """The real chunk, but in the 2-run group the second run (seed 1) reports non-finite after update 40."""
        agents, info, finite = real_chunk(agents, buffer, data_keys, start_step, length, batch_size, balanced)
        if len(finite) == 2 and start_step + length > 40:
            finite = finite.at[1].set(False)
        return agents, info, finite

    monkeypatch.setattr(training, 'offline_chunk', chunk)
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '100']
    args += ['--eval-every', '50', '--save-every', '20', '--log-every', '10', '--updates-per-call', '10', *SMALL]
    group = tmp_path / 'g' / 'cube-single-play-singletask-task1-v0'
    assert loop.main('offline', [*args, '--seeds', '0-1', '--run-dir', str(tmp_path / 'g')]) == 1
    err = capsys.readouterr().err
    assert f'non-finite parameters at steps 41..50 of {group / "seed1"}; stopped, last good checkpoint kept at' in err
    assert 'the 1 other run(s) go on from their checkpoints' in err
    # Seed 1 stopped at its last good checkpoint (step 40) and says why; seed 0 finished as it does alone.
    assert load_checkpoint(str(group / 'seed1' / 'checkpoint.msgpack'))['step'] == 40
    assert 'steps 41..50' in json.loads((group / 'seed1' / 'stopped.json').read_text())['error']
    assert not (group / 'seed1' / 'final.json').exists()
    assert loop.main('offline', [*args, '--seed', '0', '--run-dir', str(tmp_path / 'alone')]) == 0
    _assert_close_to_alone(group / 'seed0', tmp_path / 'alone')
    # A rerun trains nothing: seed 0 is complete, seed 1 stopped (until its stopped.json is deleted).
    capsys.readouterr()
    before = (group / 'seed1' / 'checkpoint.msgpack').stat().st_mtime_ns
    assert loop.main('offline', [*args, '--seeds', '0-1', '--run-dir', str(tmp_path / 'g')]) == 1
    out, err = capsys.readouterr()
    assert 'seed0 is complete' in out and 'seed1 stopped earlier on non-finite values; delete' in out
    assert err.strip().startswith('error: non-finite parameters at steps 41..50')
    assert (group / 'seed1' / 'checkpoint.msgpack').stat().st_mtime_ns == before
    # With stopped.json deleted, seed 1 resumes from step 40 (alone now, so it stays finite here). Its
    # config.json keeps the code it started with, final.json records the code that finished it.
    (group / 'seed1' / 'stopped.json').unlink()
    config_path = group / 'seed1' / 'config.json'
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), 'code_version': 'abc123'}))
    assert loop.main('offline', [*args, '--seeds', '0-1', '--run-dir', str(tmp_path / 'g')]) == 0
    assert f'note: {group / "seed1"} started with code abc123, goes on with {code_version()}' in capsys.readouterr().out
    assert json.loads(config_path.read_text())['code_version'] == 'abc123'
    assert json.loads((group / 'seed1' / 'final.json').read_text())['code_version'] == code_version() is not None


@pytest.mark.parametrize(
    'setting, words',
    [
        ('--agent.sigma=0', 'sigma'),
        ('--agent.beta=-1', 'beta'),
        ('--agent.num_samples=0', 'num_samples'),
        ('--agent.bandwidth_method=silverman', 'bandwidth_method'),
        ('--agent.reference=replay', 'reference'),
        ('--agent.no_such_field=1', 'no_such_field'),
        ('--agent.sigma=abc', 'sigma'),
    ],
)
def test_invalid_settings_fail_before_training(setting, words, tmp_path):
    result = launch('offline', *NOWHERE, setting, '--run-dir', str(tmp_path / 'r'), timeout=120)
    assert result.returncode == 2
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'r').exists()


def test_dataset_of_the_wrong_size_fails_before_training(tmp_path):
    from datasets.generate import generate_dataset  # noqa: F401  (the loader's format)

    n = 20
    path = tmp_path / 'bad.npz'
    arrays = dict(
        observations=np.zeros((n, 28), np.float32),
        actions=np.zeros((n, 4), np.float32),
        terminals=np.eye(1, n, n - 1, dtype=bool)[0],
        qpos=np.zeros((n, 21), np.float32),
        qvel=np.zeros((n, 20), np.float32),
    )
    np.savez(path, **arrays)
    np.savez(tmp_path / 'bad-val.npz', **arrays)
    result = launch(
        'offline',
        '--env',
        'cube-single',
        '--dataset',
        str(path),
        '--run-dir',
        str(tmp_path / 'r'),
        '--offline-steps',
        '10',
        *SMALL,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert 'action' in result.stderr and 'Traceback' not in result.stderr
    assert not (tmp_path / 'r').exists()


# ------------------------------------------------------------------------------------------------
# Groups: several seeds and tasks in one program


def _final(run_dir):
    return {k: v for k, v in json.loads(Path(run_dir, 'final.json').read_text()).items() if k != 'wall_time_s'}


def _assert_close_to_alone(group_dir, alone_dir):
    """A run trained in a group matches it trained alone: same final.json (but the wall time) and
    evaluations; parameters equal up to float rounding (vmap over runs changes the order of some
    CPU reductions in the gradients by an ulp, which training carries along but does not amplify
    at this size; a wrong key, task or data row would differ by orders of magnitude more)."""
    assert _final(group_dir) == _final(alone_dir)
    assert Path(group_dir, 'eval.csv').read_text() == Path(alone_dir, 'eval.csv').read_text()
    for a, b in zip(checkpoint_leaves(group_dir), checkpoint_leaves(alone_dir), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)


@pytest.mark.slow
def test_a_group_whose_runs_are_at_different_steps_trains_each_as_alone(dataset, tmp_path, monkeypatch, capsys):
    """Seed 1 of a 3-seed group was started alone and stopped at its first checkpoint (step 20): the group
    trains seeds 0 and 2 from step 0 as one group and seed 1 from its checkpoint, each to its result alone."""
    from launch import loop, training

    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '60']
    args += ['--eval-every', '30', '--save-every', '20', '--log-every', '10', '--updates-per-call', '10', *SMALL]
    runs = tmp_path / 'g' / 'cube-single-play-singletask-task1-v0'
    real_save = training.GroupTrainer.save

    def save_then_stop(self):
        real_save(self)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(training.GroupTrainer, 'save', save_then_stop)
        assert loop.main('offline', [*args, '--seed', '1', '--run-dir', str(runs / 'seed1')]) == 130
    assert load_checkpoint(str(runs / 'seed1' / 'checkpoint.msgpack'))['step'] == 20
    capsys.readouterr()
    assert loop.main('offline', [*args, '--seeds', '0-2', '--run-dir', str(tmp_path / 'g')]) == 0
    assert f'resuming {runs / "seed1"} from step 20' in capsys.readouterr().out
    for seed in (0, 1, 2):
        alone = tmp_path / f'alone{seed}'
        assert loop.main('offline', [*args, '--seed', str(seed), '--run-dir', str(alone)]) == 0
        _assert_close_to_alone(runs / f'seed{seed}', alone)


@pytest.mark.slow
def test_offline_group_of_tasks_and_seeds_matches_runs_alone(dataset, tmp_path):
    args = ['--env', 'cube-single', '--dataset', dataset, '--offline-steps', '60', '--eval-every', '60']
    args += ['--log-every', '30', '--eval-envs', '1', *SMALL]
    # At most 3 env copies alive: the group evaluates its 10 runs in two rounds, each run as alone.
    group = launch(
        'offline', *args, '--task', 'all', '--seeds', '0-1', '--max-eval-envs', '3', '--run-dir', str(tmp_path / 'g')
    )
    assert group.returncode == 0, group.stderr
    tasks = [f'cube-single-play-singletask-task{k}-v0' for k in range(1, 6)]
    assert sorted(p.name for p in (tmp_path / 'g').iterdir()) == tasks
    for task in tasks:
        for seed in (0, 1):
            config = json.loads(Path(tmp_path, 'g', task, f'seed{seed}', 'config.json').read_text())
            assert config['task'] == task and config['seed'] == seed
            assert config['ogbench_version'] == importlib.metadata.version('ogbench')  # the one installed
    alone = launch('offline', *args, '--task', '3', '--seed', '1', '--run-dir', str(tmp_path / 'alone'))
    assert alone.returncode == 0, alone.stderr
    _assert_close_to_alone(tmp_path / 'g' / tasks[2] / 'seed1', tmp_path / 'alone')
    # Another task's run is trained on its own rewards: its critic differs.
    other, alone = checkpoint_leaves(tmp_path / 'g' / tasks[0] / 'seed1'), checkpoint_leaves(tmp_path / 'alone')
    assert max(float(np.abs(a - b).max()) for a, b in zip(other, alone, strict=True)) > 1e-3


@pytest.mark.slow
def test_o2o_group_matches_runs_alone_and_resumes_after_kill(dataset, tmp_path):
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '20']
    args += '--online-steps 280 --eval-every 300 --save-every 50 --log-every 50 --eval-envs 1'.split() + SMALL
    args += ['--updates-per-call', '20', '--buffer-capacity', '500']  # 400 dataset rows: each run's ring wraps
    args += ['--max-eval-envs', '1']  # the group evaluates its runs one after the other
    whole = str(tmp_path / 'whole')
    result = launch('o2o', *args, '--seeds', '0,1', '--run-dir', whole)
    assert result.returncode == 0, result.stderr
    run_dirs = [os.path.join(whole, 'cube-single-play-singletask-task1-v0', f'seed{s}') for s in (0, 1)]
    assert _final(run_dirs[0])['steps'] == 300 and _final(run_dirs[0])['seed'] == 0
    # Killed mid-episode in the online phase (step 250 is 30 steps into the second 200-step episode),
    # with the rings wrapped: resume rebuilds each run's env and ring exactly or the parameters differ.
    killed = str(tmp_path / 'killed')
    run_killed_then_resumed('o2o', [*args, '--seeds', '0,1'], killed, 250, run_dirs=2)
    for run_dir in run_dirs:
        assert_same_result(run_dir, run_dir.replace(whole, killed))
    alone = str(tmp_path / 'alone')
    result = launch('o2o', *args, '--seed', '1', '--run-dir', alone)
    assert result.returncode == 0, result.stderr
    _assert_close_to_alone(run_dirs[1], alone)


@pytest.mark.slow
def test_o2o_run_with_several_env_steps_per_call_resumes_after_kill(dataset, tmp_path):
    """--online-updates-per-call 5: the env steps and appends of a call are one compiled loop, and a checkpoint
    falls between calls. Killed mid-episode with the ring wrapped, the rerun gives the uninterrupted result."""
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '20', '--seed', '0']
    args += '--online-steps 280 --eval-every 300 --save-every 50 --log-every 50 --eval-envs 1'.split() + SMALL
    args += ['--updates-per-call', '20', '--online-updates-per-call', '5', '--buffer-capacity', '500']
    whole = str(tmp_path / 'whole')
    result = launch('o2o', *args, '--run-dir', whole)
    assert result.returncode == 0, result.stderr
    assert _final(whole)['steps'] == 300
    killed = str(tmp_path / 'killed')
    run_killed_then_resumed('o2o', args, killed, 250)
    assert_same_result(whole, killed)


# With --dataset nowhere.npz, a setting that slipped through its check stops at the data in seconds, rather than
# generating a dataset in ~/.ogbench and training a run of 1M steps.
NOWHERE = ['--env', 'cube-single', '--dataset', 'nowhere.npz']


@pytest.mark.parametrize(
    'mode, argv, words',
    [
        ('offline', [*NOWHERE, '--seeds', '3-1'], '--seeds 3-1'),
        ('offline', [*NOWHERE, '--seeds', 'a'], '--seeds a'),
        ('offline', [*NOWHERE, '--seeds', '0,0'], 'twice'),
        ('offline', [*NOWHERE, '--seed', '1', '--seeds', '0-1'], '--seeds'),
        ('o2o', [*NOWHERE, '--seed', '-1'], '--seed must be >= 0'),
        ('offline', [*NOWHERE, '--seed', str(2**32)], f'--seed must be >= 0 and < {2**32}'),
        # Refused before the range is listed (a list of 10^14 seeds would not fit in memory).
        ('offline', [*NOWHERE, '--seeds', '0-99999999999999'], f'seeds must be < {2**32}'),
        ('o2o', [*NOWHERE, '--buffer-capacity', str(2**31)], f'--buffer-capacity must be < {2**31}'),
        ('offline', ['--env', 'cube-single-play-singletask-task1-v0', '--task', 'all'], '--task all'),
        ('offline', [*NOWHERE, '--task', 'al'], "'all'"),
        ('offline', [*NOWHERE, '--task', '7'], '1..5'),
        ('o2o', [*NOWHERE, '--online-steps', '0'], '--online-steps must be >= 1'),
        ('offline', [*NOWHERE, '--runs-dir', 'elsewhere'], '--runs-dir (a root), not both'),
        ('offline', ['--env', 'cube-single', '--dataset', 'd.npz', '--dataset-episodes', '3'], 'not both'),
        ('offline', [*NOWHERE, '--online-steps', '5'], 'an O2O setting: use launch/o2o.py'),
        ('offline', [*NOWHERE, '--offline-steps', '-5'], '--offline-steps must be >= 1, got -5'),
        ('offline', [*NOWHERE, '--bogus'], 'argument --bogus (see launch/offline.py --help)'),
        ('o2o', [*NOWHERE, '--eval-episode', '3'], '--eval-episode; did you mean --eval-episodes?'),
        ('offline', [*NOWHERE, '--agent.beta', '3'], 'agent settings are written --agent.FIELD=VALUE'),
        ('offline', [*NOWHERE, '--agent.sigma=inf'], 'agent.sigma must be finite, got inf'),
        ('o2o', [*NOWHERE, '--agent', 'iql', '--agent.lr=inf'], 'agent.lr must be finite, got inf'),
        ('offline', [*NOWHERE, '--agent.hidden_dims=32,,32'], '--agent.hidden_dims=32,,32: expected integers'),
        ('offline', [*NOWHERE, '--offline-steps', '9' * 23], f'--offline-steps must be < {2**31} (steps are counted'),
        ('o2o', [*NOWHERE, '--online-steps', str(2**31)], f'--online-steps must be < {2**31}'),
        (
            'o2o',
            [*NOWHERE, '--offline-steps', str(2**30), '--online-steps', str(2**30)],
            f'--offline-steps + --online-steps must be < {2**31} (steps are counted in int32), got {2**31}',
        ),
        ('o2o', [*NOWHERE, '--online-updates-per-call', str(2**31)], f'--online-updates-per-call must be < {2**31}'),
        ('offline', [*NOWHERE, '--eval-every', str(2**31)], f'--eval-every must be < {2**31}'),
        # Counted, not listed: 4e9 seeds would fill the memory before any other check.
        ('offline', [*NOWHERE, '--seeds', '0-4294967295'], 'names 4294967296 seeds; one command'),
        ('o2o', [*NOWHERE, '--buffer-capacity', '0'], '--buffer-capacity must be >= 1'),
        ('offline', [*NOWHERE, '--max-eval-envs', '0'], '--max-eval-envs must be >= 1, got 0'),
        ('offline', ['--env', 'cube-single', '--dataset-episodes', '0'], '--dataset-episodes must be >= 1, got 0'),
        ('offline', [*NOWHERE, '--agent.batch_size=3.5'], '--agent.batch_size=3.5: expected an integer like 256'),
        # Integers reach JAX as int32: larger ones were an OverflowError (or a TypeError) traceback mid-start.
        ('offline', [*NOWHERE, f'--agent.svgd_steps={2**31}'], f'--agent.svgd_steps={2**31}: must be < {2**31}'),
        ('offline', [*NOWHERE, '--agent.hidden_dims=16,' + '9' * 20], f'--agent.hidden_dims=16,{"9" * 20}: must be <'),
        # Refused before the data is looked for: not after a download attempt, at the generation that follows it.
        ('offline', [*NOWHERE, '--workers', '0'], '--workers must be >= 1, got 0'),
    ],
)
def test_bad_seeds_task_or_steps_fail_in_one_line_writing_nothing(mode, argv, words, tmp_path, capsys):
    from launch.loop import main

    assert main(mode, [*argv, '--run-dir', str(tmp_path / 'r')]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'r').exists()


@pytest.mark.parametrize(
    'mode, argv, words',
    [
        ('offline', ['--agent', 'rlpd'], '--agent rlpd trains online from scratch: use launch/o2o.py --agent rlpd'),
        ('o2o', ['--agent', 'foo'], "argument --agent: invalid choice: 'foo'"),
        ('offline', ['--seed', 'x'], "argument --seed: invalid int value: 'x'"),
    ],
)
def test_command_line_mistakes_are_one_line_not_a_usage_block(mode, argv, words, capsys):
    from launch.loop import main

    with pytest.raises(SystemExit) as exit:
        main(mode, argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and words in err and err.strip().splitlines() == [err.strip()]
    assert err.strip().endswith(f'(see launch/{mode}.py --help)')


def test_the_seed_given_is_the_runs_and_its_evaluation_copies_are_at_most_its_episodes():
    from launch.run_plan import parse_seeds, run_settings
    from launch.settings import agent_config

    args = parse_args(['--env', 'cube-single', '--seed', '3', '--eval-episodes', '4', '--eval-envs', '10'], 'offline')
    assert parse_seeds(args) == [3]
    assert parse_seeds(parse_args(['--env', 'cube-single'], 'offline')) == [0]
    task = resolve_task('cube-single')
    settings = run_settings(args, task, 3, agent_config(args, 'offline', task.family), 'offline')
    # config.json records the copies used: no more than the episodes they play.
    assert (settings['seed'], settings['eval_envs'], settings['eval_episodes']) == (3, 4, 4)


def test_seeds_take_a_one_seed_range_the_last_32_bit_seed_and_up_to_the_most_per_command():
    from launch.run_plan import SEEDS_PER_COMMAND, seed_list

    assert seed_list('3-3') == [3] and seed_list(' 0 - 2 ,7') == [0, 1, 2, 7]
    assert seed_list(str(2**32 - 1)) == [2**32 - 1]
    with pytest.raises(UserError, match=f'seeds must be < {2**32}'):
        seed_list(str(2**32))
    assert len(seed_list(f'0-{SEEDS_PER_COMMAND - 1}')) == SEEDS_PER_COMMAND == 100_000
    with pytest.raises(UserError, match='names 100001 seeds; one command takes at most 100000'):
        seed_list('0-100000')


def test_each_mode_gets_its_own_step_defaults():
    # Offline: 1M offline steps and no online phase, whatever o2o's defaults; O2O: 1M offline then 1M online.
    offline = parse_args(['--env', 'cube-single'], 'offline')
    assert (offline.offline_steps, offline.online_steps, offline.online_updates_per_call) == (1_000_000, 0, 1)
    assert offline.balanced_sampling is False and offline.buffer_capacity is None
    o2o = parse_args(['--env', 'cube-single'], 'o2o')
    assert (o2o.offline_steps, o2o.online_steps, o2o.balanced_sampling, o2o.buffer_capacity) == (
        1_000_000,
        1_000_000,
        False,
        None,
    )
    # The evaluation protocol, the same in both modes: 50 episodes every 100k steps, over 10 env copies (each
    # copy's episodes are seeded by its index), and in O2O one update per env step.
    for args in (offline, o2o):
        assert (args.eval_every, args.eval_episodes, args.eval_envs) == (100_000, 50, 10)
    assert o2o.online_updates_per_call == 1


def test_the_agent_config_of_a_run_takes_its_modes_settings():
    """FQL's α differs between offline and O2O on humanoidmaze-medium (30, 100): the CLIs must pass the mode."""
    from launch.settings import agent_config

    family = resolve_task('humanoidmaze-medium').family
    for mode, alpha in (('offline', 30.0), ('o2o', 100.0)):
        args = parse_args(['--env', 'humanoidmaze-medium', '--agent', 'fql'], mode)
        assert agent_config(args, mode, family).alpha == alpha, mode


def test_a_run_resumed_on_data_of_another_origin_is_refused_in_words(tmp_path):
    from launch.command_line import UserError
    from launch.run_plan import check_same_run

    (tmp_path / 'config.json').write_text(json.dumps(dict(seed=0, dataset_origin='regenerated')))
    check_same_run(str(tmp_path), dict(seed=0, dataset_origin=None))  # before the data is loaded: not yet known
    check_same_run(str(tmp_path), dict(seed=0, dataset_origin='regenerated'))
    with pytest.raises(UserError, match='was trained on regenerated data, but this time the data is official'):
        check_same_run(str(tmp_path), dict(seed=0, dataset_origin='official'))
    (tmp_path / 'config.json').write_text(json.dumps(dict(seed=0, eval_envs=2, eval_episodes=2, hidden=[64, 64])))
    with pytest.raises(UserError) as error:  # every difference, not only the first (a derived one)
        check_same_run(str(tmp_path), dict(seed=0, eval_envs=1, eval_episodes=1, hidden=(64, 64)))
    assert 'other settings: eval_envs=2 (now 1), eval_episodes=2 (now 1); pass another --run-dir or --runs-dir' in str(
        error.value
    )


def test_a_run_recorded_before_the_data_origin_was_resumes_on_any_origin(tmp_path):
    """A config.json written before runs recorded their data's origin has no dataset_origin: nothing says the data
    differs, so the run goes on whatever origin the data has now; its other settings are still checked."""
    from launch.run_plan import check_same_run

    (tmp_path / 'config.json').write_text(json.dumps(dict(seed=0, buffer_capacity=400)))
    for origin in (None, 'official', 'regenerated', 'generated', 'given', 'minari'):
        check_same_run(str(tmp_path), dict(seed=0, buffer_capacity=400, dataset_origin=origin))
    with pytest.raises(UserError, match=r'other settings: seed=0 \(now 1\);'):
        check_same_run(str(tmp_path), dict(seed=1, buffer_capacity=400, dataset_origin='official'))


def test_a_resume_may_change_only_what_leaves_the_result_as_it_was(tmp_path):
    """How the run is watched and how its evaluation is spread over processes may change on --resume; its
    lengths may not (a resumed O2O run with other online steps would end, evaluate and score elsewhere)."""
    from launch.run_plan import check_same_run

    saved = dict(seed=0, offline_steps=100, online_steps=100, max_eval_envs=50, workers=4, wandb='disabled')
    saved.update(progress=True, resume=False, code_version='abc')
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    watched = dict(saved, max_eval_envs=10, workers=1, wandb='offline', progress=False, resume=True)
    check_same_run(str(tmp_path), dict(watched, code_version='abc-dirty'))
    for field in ('offline_steps', 'online_steps'):
        with pytest.raises(UserError, match=f'other settings: {field}=100 \\(now 200\\)'):
            check_same_run(str(tmp_path), dict(watched, **{field: 200}))


def _o2o_settings():
    from launch.run_plan import run_settings
    from launch.settings import agent_config

    args = parse_args(['--env', 'cube-single', '--task', '1', '--buffer-capacity', '5000'], 'o2o')
    task = resolve_task('cube-single', 1)
    return json.loads(json.dumps(run_settings(args, task, 0, agent_config(args, 'o2o', task.family), 'o2o')))


def _another_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return f'{value}-other' if isinstance(value, str) else 'other'


@pytest.mark.parametrize('field', sorted(set(_o2o_settings()) - {'dataset_origin', 'agent_config'}))
def test_a_resume_with_any_other_setting_than_how_the_run_is_watched_is_refused(field, tmp_path):
    """Every recorded setting but how the run is watched, how many processes its evaluation and data use and the
    code's version is compared on --resume (the agent's fields have a test of their own): one let through, a
    resumed O2O run that switched to balanced sampling, say, would go on training another way without a word."""
    from launch.run_plan import RESUMABLE_DIFFERENCES, check_same_run

    saved = _o2o_settings()
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    changed = dict(saved, **{field: _another_value(saved[field])})
    if field in ('resume', 'wandb', 'progress', 'workers', 'max_eval_envs', 'code_version'):
        assert field in RESUMABLE_DIFFERENCES
        check_same_run(str(tmp_path), changed)
    else:
        with pytest.raises(UserError, match=f'other settings: {field}='):
            check_same_run(str(tmp_path), changed)


def test_a_resume_with_another_evaluation_schedule_is_refused(tmp_path):
    """The score is the mean success of the last 3 evaluations: other evaluation steps, episodes or copies per
    run (each copy's episodes are seeded by its index) would score other evaluations than the run began."""
    from launch.run_plan import check_same_run

    saved = dict(seed=0, offline_steps=100, online_steps=0, eval_every=10, eval_episodes=10, eval_envs=10)
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    check_same_run(str(tmp_path), dict(saved))
    for field in ('eval_every', 'eval_episodes', 'eval_envs'):
        with pytest.raises(UserError, match=f'other settings: {field}=10 \\(now 20\\)'):
            check_same_run(str(tmp_path), dict(saved, **{field: 20}))


def test_chunks_stop_at_step_1_and_at_every_multiple_of_k_and_of_each_period():
    from launch.training import _next_boundary

    def boundaries(end, every, k):
        step, out = 0, []
        while step < end:
            step = _next_boundary(step, end, every, k)
            out.append(step)
        return out

    def by_hand(end, every, k):  # step 1, the phase's end, and each multiple of k or of a period before it
        return sorted({1, end} | {m for n in (k, *every) for m in range(n, end, n)})

    for end, every, k in [(100, (30, 50, 40), 25), (57, (5000, 20, 7), 1000), (12, (5, 100, 100), 1)]:
        assert boundaries(end, every, k) == by_hand(end, every, k), (end, every, k)
    assert boundaries(100, (30, 50, 40), 25) == [1, 25, 30, 40, 50, 60, 75, 80, 90, 100]
    # The online phase starts where the offline one ended: no step-1 stop there, multiples counted from 0.
    assert _next_boundary(57, 80, (20, 30, 1000), 1000) == 60


def test_a_run_with_another_agent_config_is_refused_naming_the_fields_that_differ(tmp_path):
    from launch.command_line import UserError
    from launch.run_plan import check_same_run

    saved = dict(seed=0, agent_config=dict(beta=1.0, hidden_dims=[32, 32], lr=3e-4))
    (tmp_path / 'config.json').write_text(json.dumps(saved))
    check_same_run(str(tmp_path), dict(seed=0, agent_config=dict(lr=3e-4, hidden_dims=(32, 32), beta=1.0)))
    with pytest.raises(UserError) as error:
        check_same_run(str(tmp_path), dict(seed=0, agent_config=dict(lr=3e-4, hidden_dims=(64, 64), beta=3.0)))
    assert str(error.value) == (
        f'{tmp_path} holds a run with other settings: agent.beta=1.0 (now 3.0), agent.hidden_dims=[32, 32] '
        '(now [64, 64]); pass another --run-dir or --runs-dir (or the same settings to resume it)'
    )


@pytest.mark.parametrize(
    'flag, other',
    [
        # Read as not given, each of these would go on: to the default run directory, or the default data
        # (--dataset-episodes would generate it there); nowhere.npz stops a run that slipped through at the data.
        ('--dataset', ['--dataset-episodes', '2']),
        ('--dataset-dir', ['--dataset', 'nowhere.npz']),
        ('--run-dir', ['--dataset', 'nowhere.npz']),
        ('--runs-dir', ['--dataset', 'nowhere.npz']),
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_default(flag, other, tmp_path, monkeypatch, capsys):
    from launch.loop import main

    monkeypatch.chdir(tmp_path)  # where the default runs/ would be
    assert main('offline', ['--env', 'cube-single', *other, flag, '']) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f'error: {flag} is empty: give a path, or leave {flag} out for the default']
    assert not list(tmp_path.iterdir())


def test_a_buffer_capacity_refusal_names_its_cause(dataset, tmp_path, capsys):
    from launch.loop import _buffer_capacity, main

    argv = ['--env', 'cube-single', '--dataset', dataset, '--run-dir', str(tmp_path / 'r'), *SMALL]
    argv += ['--online-steps', '30000', '--eval-every', '10000', '--log-every', '10000', '--save-every', '10000']
    assert main('o2o', [*argv, '--buffer-capacity', '300']) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'error: --buffer-capacity 300 is smaller than the dataset (400 rows); give at least 400, or omit it for '
        'the default max(2000000, rows + 1)'
    ]
    # Larger than the dataset (400 rows), but not than what one call appends.
    assert main('o2o', [*argv, '--buffer-capacity', '5000', '--online-updates-per-call', '10000']) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --online-updates-per-call 10000 appends up to 10000 transitions at once, more than the ring's 5000 "
        'rows; give a smaller --online-updates-per-call or a larger --buffer-capacity'
    ]
    assert not (tmp_path / 'r').exists()
    # A call also ends at every period and at the end of the phase: beyond those, K appends no more.
    periods = dict(online_steps=30, log_every=50, eval_every=50, save_every=50)
    args = types.SimpleNamespace(buffer_capacity=400, balanced_sampling=False, online_updates_per_call=10**9, **periods)
    assert _buffer_capacity(args, 'o2o', 400) == 400
    # A call may fill the whole ring at once: none of its transitions overwrites another of the same call.
    periods = dict(online_steps=1000, log_every=1000, eval_every=1000, save_every=1000)
    args = types.SimpleNamespace(buffer_capacity=500, balanced_sampling=False, online_updates_per_call=500, **periods)
    assert _buffer_capacity(args, 'o2o', 400) == 500
    # Offline nothing is appended: the ring is the dataset, whatever --buffer-capacity says.
    assert _buffer_capacity(types.SimpleNamespace(**{**vars(args), 'buffer_capacity': None}), 'offline', 400) == 400


def test_a_ring_holds_the_whole_dataset_and_a_whole_call_and_each_period_ends_a_call():
    from launch.loop import _buffer_capacity

    big = 10**6  # no period ends a call before the ring is full
    base = dict(buffer_capacity=400, balanced_sampling=False, online_updates_per_call=400, online_steps=big)
    base.update(log_every=big, eval_every=big, save_every=big)
    assert _buffer_capacity(types.SimpleNamespace(**base), 'o2o', 400) == 400
    # One row short of the dataset's 400, or one transition of a call more than the ring holds: refused.
    with pytest.raises(UserError, match='--buffer-capacity 399 is smaller than the dataset'):
        _buffer_capacity(types.SimpleNamespace(**{**base, 'buffer_capacity': 399}), 'o2o', 400)
    with pytest.raises(UserError, match='appends up to 401 transitions'):
        _buffer_capacity(types.SimpleNamespace(**{**base, 'online_updates_per_call': 401}), 'o2o', 400)
    # A logging, evaluation or save period ends a call: a K beyond any one of them appends no more than it.
    for period in ('log_every', 'eval_every', 'save_every'):
        args = types.SimpleNamespace(**{**base, 'online_updates_per_call': big, period: 400})
        assert _buffer_capacity(args, 'o2o', 400) == 400, period
    # Without --buffer-capacity: max(2M, rows + 1), and with balanced sampling (RLPD) rows + 2M, so that no
    # dataset row is overwritten within 2M online steps; offline nothing is appended.
    default = {**base, 'buffer_capacity': None, 'online_updates_per_call': 1}
    for rows, balanced, want in [(400, False, 2_000_000), (2_000_000, False, 2_000_001), (400, True, 2_000_400)]:
        args = types.SimpleNamespace(**{**default, 'balanced_sampling': balanced})
        assert _buffer_capacity(args, 'o2o', rows) == want, (rows, balanced)
    assert _buffer_capacity(types.SimpleNamespace(**{**default, 'balanced_sampling': True}), 'offline', 400) == 400


def test_group_data_is_read_once_with_each_tasks_labels_and_its_origin(monkeypatch):
    """D4RL data: 'given' with --dataset, else 'official', and 'minari' on the Minari backend; the transitions
    come from the first task, the rewards and masks of every task stacked in the tasks' order."""
    from launch import loop

    def load(task, env, dataset_path=None, dataset_dir=None):
        index = float(task.name.split('-')[1] == 'medium')
        rows = dict(observations=np.full((3, 2), index), actions=np.zeros((3, 1)))
        return dict(rows, rewards=np.full(3, index), masks=np.full(3, 1 - index))

    monkeypatch.setattr(loop, 'make_env', lambda task: types.SimpleNamespace(close=lambda: None))
    monkeypatch.setattr(loop, 'load_d4rl_data', load)
    tasks = [
        dataclasses.replace(resolve_task(n), backend='d4rl') for n in ('antmaze-umaze-v2', 'antmaze-medium-play-v2')
    ]
    for given, backend, origin in ((None, 'd4rl', 'official'), ('x.hdf5', 'd4rl', 'given'), (None, 'minari', 'minari')):
        args = types.SimpleNamespace(dataset=given, dataset_dir=None)
        some = [dataclasses.replace(t, backend=backend) for t in tasks]
        dataset, labels, got = loop._load_group_data(args, some)
        assert got == origin
        assert sorted(dataset) == ['actions', 'observations'] and np.all(dataset['observations'] == 0)
        np.testing.assert_array_equal(labels['rewards'], [[0, 0, 0], [1, 1, 1]])
        np.testing.assert_array_equal(labels['masks'], [[1, 1, 1], [0, 0, 0]])


def test_a_run_dir_that_is_a_file_fails_in_one_line_before_the_data(tmp_path, capsys):
    from launch.loop import main

    (tmp_path / 'notes.txt').write_text('mine')
    assert (
        main('offline', ['--env', 'cube-single', '--dataset', 'nowhere.npz', '--run-dir', str(tmp_path / 'notes.txt')])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.endswith(f'notes.txt: {tmp_path / "notes.txt"} is a file; pass a folder') and '\n' not in err
    # A group's runs go below --run-dir (or --runs-dir): a file there is refused in one line too.
    for flag in ('--run-dir', '--runs-dir'):
        argv = ['--env', 'cube-single', '--seeds', '0-1', '--dataset', 'nowhere.npz', flag, str(tmp_path / 'notes.txt')]
        assert main('offline', argv) == 2
        assert (
            capsys.readouterr().err
            == f'error: {flag} {tmp_path / "notes.txt"}: {tmp_path / "notes.txt"} is a file; pass a folder\n'
        )
    assert (tmp_path / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize(
    'error, words',
    [
        (MemoryError('Unable to allocate 209. GiB for an array'), 'Unable to allocate 209. GiB'),
        (MemoryError(), 'MemoryError'),
    ],
)
def test_host_memory_running_out_is_the_same_one_line(error, words, dataset, tmp_path, monkeypatch, capsys):
    """numpy's failed host allocation (MemoryError, with or without a message) is worded as XLA's is."""
    import launch.loop
    from launch.loop import main

    def too_big(*args, **kwargs):
        raise error

    monkeypatch.setattr(launch.loop.GroupBuffer, 'create', too_big)
    argv = ['--env', 'cube-single', '--dataset', dataset, '--seeds', '0-1', '--run-dir', str(tmp_path / 'g'), *SMALL]
    assert main('o2o', argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: out of memory ({words}') and '\n' not in err
    assert 'a rerun resumes each run from its last checkpoint' in err


@pytest.mark.parametrize(
    'message',
    [
        'RESOURCE_EXHAUSTED: Out of memory allocating 224000000000 bytes.',
        'INTERNAL: Error dispatching computation: Out of memory allocating 224000000000 bytes.',
        'INTERNAL: something else',
    ],
)
def test_out_of_memory_is_one_line_and_leaves_no_config_to_refuse_a_smaller_rerun(
    message, dataset, tmp_path, monkeypatch, capsys
):
    import launch.loop
    from launch.loop import main

    def too_big(*args, **kwargs):
        raise jax.errors.JaxRuntimeError(message)

    monkeypatch.setattr(launch.loop.GroupBuffer, 'create', too_big)
    argv = ['--env', 'cube-single', '--dataset', dataset, '--seeds', '0-1', '--run-dir', str(tmp_path / 'g'), *SMALL]
    if 'Out of memory' not in message:  # any other runtime error is not ours to word: it keeps its traceback
        with pytest.raises(jax.errors.JaxRuntimeError, match='something else'):
            main('o2o', argv)
        return
    assert main('o2o', argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: out of memory ({message})') and '\n' not in err
    assert 'train fewer runs at once (--seeds, --task all) or give a smaller --agent.batch_size or ' in err
    # What an offline run takes: it has no --buffer-capacity (its buffer is the dataset).
    assert main('offline', argv) == 1
    offline = capsys.readouterr().err
    assert 'smaller --agent.batch_size or --agent.hidden_dims;' in offline and '--buffer-capacity' not in offline
    # The two runs' directories were made (and locked) before the buffer failed, but hold no config.json.
    assert len(list((tmp_path / 'g').rglob('run.lock'))) == 2 and not list((tmp_path / 'g').rglob('config.json'))


def test_a_start_that_kept_nothing_takes_other_settings_on_its_rerun(dataset, tmp_path, monkeypatch, capsys):
    import launch.loop
    from launch.loop import main

    run_dir = tmp_path / 'run'
    argv = ['--env', 'cube-single', '--dataset', dataset, '--offline-steps', '4', '--eval-every', '4', *SMALL]
    argv += ['--run-dir', str(run_dir)]

    def out_of_memory(self):
        raise MemoryError('batch too large')

    with monkeypatch.context() as patch:  # out of memory in the first update: config.json written, no checkpoint
        patch.setattr(launch.loop.GroupTrainer, 'train', out_of_memory)
        assert main('offline', [*argv, '--agent.batch_size=99999']) == 1
    assert 'or give a smaller --agent.batch_size or --agent.hidden_dims;' in capsys.readouterr().err
    assert json.loads((run_dir / 'config.json').read_text())['agent_config']['batch_size'] == 99999
    assert not (run_dir / 'checkpoint.msgpack').exists()
    # --resume asks to go on from a checkpoint: there is none.
    assert main('offline', [*argv, '--resume']) == 2
    assert f'--resume: {run_dir} holds no checkpoint to resume from' in capsys.readouterr().err
    # The smaller rerun is not refused as another run's settings: it starts again, and says so.
    assert main('offline', argv) == 0
    out = capsys.readouterr().out
    assert f'note: {run_dir} kept nothing of its earlier start (no checkpoint yet); it starts again with ' in out
    assert 'agent.batch_size=99999 (now 32)' in out
    assert json.loads((run_dir / 'config.json').read_text())['agent_config']['batch_size'] == 32
    assert json.loads((run_dir / 'final.json').read_text())['steps'] == 4
    # A run that kept something (here its final.json and checkpoint) still refuses other settings.
    assert main('offline', [*argv, '--agent.batch_size=16']) == 2
    assert 'holds a run with other settings: agent.batch_size=32 (now 16)' in capsys.readouterr().err


@pytest.mark.parametrize(
    'kept, text', [('checkpoint.msgpack', None), ('final.json', '{}'), ('stopped.json', '{"error": "non-finite"}')]
)
def test_a_run_that_kept_a_checkpoint_final_or_stopped_json_keeps_its_settings(kept, text, tmp_path, capsys):
    """Any one of the three is enough: a rerun with another setting is refused before the data, and the run's
    config.json is left as it was."""
    from launch.loop import main, plan
    from launch.run_plan import jsonable

    run_dir = tmp_path / 'run'
    argv = [*NOWHERE, '--run-dir', str(run_dir)]
    (run_settings,) = (r.settings for r in plan(parse_args(argv, 'offline'), 'offline')[2])
    run_dir.mkdir()
    (run_dir / 'config.json').write_text(json.dumps(jsonable(run_settings)))
    if text is None:
        save_checkpoint(str(run_dir / kept), dict(step=100))
    else:
        (run_dir / kept).write_text(text)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert main('offline', [*argv, '--offline-steps', '8']) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f'error: {run_dir} holds a run with other settings: offline_steps=1000000 (now 8); '
        'pass another --run-dir or --runs-dir (or the same settings to resume it)'
    )
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_hand_edited_stopped_json_of_any_error_value_is_reported_in_one_line(tmp_path, capsys):
    """Its error reaches the exit message as text: a list there was a TypeError traceback."""
    from launch.loop import main, plan
    from launch.run_plan import jsonable

    run_dir = tmp_path / 'run'
    argv = [*NOWHERE, '--run-dir', str(run_dir)]
    (run_settings,) = (r.settings for r in plan(parse_args(argv, 'offline'), 'offline')[2])
    run_dir.mkdir()
    (run_dir / 'config.json').write_text(json.dumps(jsonable(run_settings)))
    (run_dir / 'stopped.json').write_text('{"error": [1, 2]}')
    assert main('offline', argv) == 1
    assert capsys.readouterr().err.strip() == 'error: [1, 2]'


def test_runs_go_in_a_folder_per_mode_task_agent_and_seed(tmp_path, monkeypatch):
    """--runs-dir (default runs/): MODE/TASK/AGENT/seedS; --run-dir of a group: TASK/seedS below it; --run-dir of
    a single run: the folder itself."""
    from launch.loop import plan

    monkeypatch.chdir(tmp_path)  # where the default runs/ is

    def run_dirs(mode, *argv):
        return [r.run_dir for r in plan(parse_args(['--env', 'cube-single', *argv], mode), mode)[2]]

    tasks = [f'cube-single-play-singletask-task{k}-v0' for k in range(1, 6)]
    assert run_dirs('o2o', '--agent', 'iql', '--task', 'all', '--seeds', '3,7', '--runs-dir', 'mine') == [
        os.path.join('mine', 'o2o', task, 'iql', f'seed{seed}') for task in tasks for seed in (3, 7)
    ]
    assert run_dirs('offline', '--task', '2', '--seed', '5') == [
        os.path.join('runs', 'offline', tasks[1], 'fav', 'seed5')
    ]
    assert run_dirs('offline', '--task', '4', '--seeds', '0-1', '--run-dir', 'g') == [
        os.path.join('g', tasks[3], 'seed0'),
        os.path.join('g', tasks[3], 'seed1'),
    ]
    assert run_dirs('offline', '--task', '4', '--seed', '1', '--run-dir', 'one') == ['one']
    assert not list(tmp_path.iterdir())  # planned, nothing written


def test_a_group_and_a_single_run_do_not_share_a_run_dir(tmp_path, capsys):
    from launch.loop import main

    single, group = tmp_path / 'single', tmp_path / 'group'
    (single / 'config.json').parent.mkdir()
    (single / 'config.json').write_text(json.dumps(dict(seed=0)))
    (group / 'cube-single-task1' / 'seed1').mkdir(parents=True)
    (group / 'cube-single-task1' / 'seed1' / 'config.json').write_text(json.dumps(dict(seed=1)))
    before = sorted(tmp_path.rglob('*'))
    common = ['--env', 'cube-single', '--dataset', 'nowhere.npz']
    assert main('offline', [*common, '--seeds', '0-1', '--run-dir', str(single)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f'error: {single} holds a single run (its config.json), and a group of 2 runs goes in folders below '
        '--run-dir: pass another --run-dir'
    )
    assert main('offline', [*common, '--task', 'all', '--run-dir', str(single)]) == 2
    assert 'a group of 5 runs goes in folders below --run-dir' in capsys.readouterr().err
    assert main('offline', [*common, '--task', '1', '--seed', '1', '--run-dir', str(group)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: {group} holds the runs of a group ({group / "cube-single-task1" / "seed1"}, ...)')
    assert '\n' not in err and sorted(tmp_path.rglob('*')) == before  # nothing written


def test_a_root_of_runs_given_as_run_dir_is_refused(tmp_path, capsys):
    """--run-dir typed for --runs-dir: a single run wrote its files into the root of other runs, a group its runs
    beside theirs at another depth (launch/tables.py then found both)."""
    from launch.loop import main

    root = tmp_path / 'runs'
    other = root / 'offline' / 'cube-single-play-singletask-task1-v0' / 'fav' / 'seed0'
    other.mkdir(parents=True)
    (other / 'config.json').write_text(json.dumps(dict(seed=0)))
    before = sorted(tmp_path.rglob('*'))
    common = ['--env', 'cube-single', '--dataset', 'nowhere.npz']
    for run_dir, seeds in ((root, '0'), (root, '0-1'), (root / 'offline', '0-1')):
        assert main('offline', [*common, '--seeds', seeds, '--run-dir', str(run_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f'error: {run_dir} holds other runs ({other}, ...), laid out as no run of --run-dir is: pass another '
            '--run-dir (a root of runs is --runs-dir)'
        )
    assert sorted(tmp_path.rglob('*')) == before  # nothing written


@pytest.mark.parametrize('text', [b'garbage', b'[1]', b'\xff\xfe{'])  # the last: not UTF-8 at all
def test_a_damaged_run_file_is_one_line_naming_it(text, tmp_path, capsys):
    from launch.loop import _not_done, main
    from launch.run_logs import RunFileError

    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'config.json').write_bytes(text)
    assert main('offline', ['--env', 'cube-single', '--dataset', 'nowhere.npz', '--run-dir', str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: {run_dir / "config.json"} ') and 'delete its run directory' in err
    assert '\n' not in err and (run_dir / 'config.json').read_bytes() == text
    # A damaged final.json, where the loop looks for finished runs.
    (run_dir / 'final.json').write_bytes(text)
    with pytest.raises(RunFileError, match=f'^{run_dir / "final.json"} '):
        _not_done([types.SimpleNamespace(run_dir=str(run_dir))], {}, {})


def test_a_dataset_dir_below_a_file_is_one_line(tmp_path, capsys):
    from launch.loop import main

    (tmp_path / 'notes.txt').write_text('mine')
    argv = ['--env', 'cube-single', '--dataset-episodes', '2', '--dataset-dir', str(tmp_path / 'notes.txt')]
    assert main('offline', [*argv, '--run-dir', str(tmp_path / 'run')]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'error: --dataset-dir {tmp_path / "notes.txt"}: {tmp_path / "notes.txt"} is a file; pass a folder'
    assert (tmp_path / 'notes.txt').read_text() == 'mine'


def test_group_refused_in_one_line_when_another_process_holds_one_of_its_run_dirs(dataset, tmp_path, capsys):
    from launch.loop import main
    from launch.run_lock import run_lock

    group = tmp_path / 'g'
    seed0, seed1 = (group / 'cube-single-play-singletask-task1-v0' / f'seed{s}' for s in (0, 1))
    seed1.mkdir(parents=True)
    argv = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--seeds', '0,1', '--offline-steps', '5']
    with run_lock(str(seed1)):  # as another process training seed 1 would
        assert main('offline', [*argv, '--run-dir', str(group), *SMALL]) == 2
    err = capsys.readouterr().err
    assert f'{seed1} is being trained by pid {os.getpid()}' in err and len(err.strip().splitlines()) == 1
    assert not (seed0 / 'config.json').exists() and not (seed1 / 'config.json').exists()


@pytest.mark.slow
@pytest.mark.parametrize('stop, code, word', [('SIGINT', 130, 'interrupted'), ('SIGTERM', 143, 'terminated')])
def test_ctrl_c_or_sigterm_stops_in_one_line_keeping_the_checkpoint(stop, code, word, dataset, tmp_path):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler, `kill`) to the process group: the trainer and its env
    workers stop without tracebacks, the run lock is released and the last checkpoint loads."""
    import signal
    import subprocess
    import time

    run_dir = tmp_path / 'run'
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '1000000', *SMALL]
    args += ['--eval-episodes', '2', '--save-every', '20', '--updates-per-call', '10', '--run-dir', str(run_dir)]
    command = [sys.executable, 'launch/offline.py', *args]
    with process_group(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.time() + 120
        while time.time() < deadline and not (run_dir / 'checkpoint.msgpack').exists():
            time.sleep(0.2)
        os.killpg(process.pid, getattr(signal, stop))
        _, err = process.communicate(timeout=300)  # a guard against a hang, not a speed check (a loaded CI machine)
    assert process.returncode == code
    assert err.strip().splitlines() == [f'{word}: {RERUN_TO_GO_ON}']
    assert load_checkpoint(str(run_dir / 'checkpoint.msgpack'))['step'] >= 20
    from launch.run_lock import run_lock

    with run_lock(str(run_dir)):  # released
        pass


def test_a_second_sigterm_while_the_first_stops_the_run_does_not_cut_its_cleanup_short(monkeypatch, capsys):
    """`timeout` passes on the SIGTERM its process group got, so the run got two: the second, raised in the first
    one's cleanup (a dataset generation's worker pool), ended it with a traceback."""
    import launch.loop

    cleaned_up = []

    def terminated_twice(args, mode):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            cleaned_up.append(True)

    monkeypatch.setattr(launch.loop, 'run', terminated_twice)
    previous = signal.getsignal(signal.SIGTERM)
    assert launch.loop.main('o2o', ['--env', 'cube-single']) == 143
    assert cleaned_up and capsys.readouterr().err.startswith('terminated: rerun the same command')
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.parametrize(
    ('signum', 'how'), [(signal.SIGTERM, ('terminated', 143)), (signal.SIGINT, ('interrupted', 130))]
)
def test_a_stop_that_reaches_the_command_as_a_plain_keyboard_interrupt_keeps_its_signals_exit(signum, how):
    """Ray's waits turn any KeyboardInterrupt raised in them into a plain one: a SIGTERM must still end the
    command as terminated (exit 143), from the signals received, not only from the exception's type."""
    from launch.stops import how_it_stopped, stops_raised

    with stops_raised():
        try:
            os.kill(os.getpid(), signum)
        except KeyboardInterrupt:
            pass
        assert how_it_stopped(KeyboardInterrupt()) == how
    assert how_it_stopped(KeyboardInterrupt()) == ('interrupted', 130)  # the block's end forgets its stops


def test_signals_held_are_delivered_once_each_when_the_block_ends():
    from launch.compiled import signals_held

    delivered = []

    def on_term(signum, frame):
        delivered.append(signum)
        raise RuntimeError('terminated')

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with pytest.raises(KeyboardInterrupt), signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            went_on = True  # not reached had the signal been raised here
        assert went_on and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(RuntimeError, match='terminated'), signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert delivered == []
        assert delivered == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is on_term
    finally:
        signal.signal(signal.SIGTERM, previous)
    # Outside the main thread (where handlers cannot be set) there is nothing to hold.
    from concurrent.futures import ThreadPoolExecutor

    def in_a_thread():
        with signals_held():
            return 'ran'

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(in_a_thread).result() == 'ran'


@pytest.mark.parametrize('call', ['offline_chunk', 'online_chunk', 'policy_action', 'create'])
def test_a_ctrl_c_while_a_compiled_call_traces_or_compiles_waits_for_the_call(call, monkeypatch, dataset, tmp_path):
    """XLA compiles in a thread of its own: a Ctrl-C that ended JAX's wait for a compile let the process exit while
    the compile went on, and it crashed (SIGSEGV, exit 139) instead of stopping with exit code 130. The loop's
    compiled calls hold SIGINT and SIGTERM until they return. Here the signal comes while the call traces the agent
    (a batch size no other test compiles, so the call traces and compiles anew; the loop's setup traces anew each
    time)."""
    went_on = []
    methods = {'offline_chunk': 'update', 'online_chunk': 'update', 'policy_action': 'sample_actions'}
    method = methods.get(call, 'create')
    original = getattr(FAVAgent, method)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        went_on.append(method)  # not reached had the signal been raised here, mid-trace
        return original(*args, **kwargs)

    if call == 'create':  # the loop's setup: the rings and the stacked agents, compiled
        monkeypatch.setattr(FAVAgent, method, classmethod(lambda cls, *args, **kwargs: interrupted(*args, **kwargs)))
        from launch.loop import main

        args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, *SMALL]
        assert main('offline', [*args, '--run-dir', str(tmp_path / 'run')]) == 130
        assert went_on
        return
    data = _synthetic_data(n=8)
    agents, buffer, key = _agent(data), GroupBuffer.of_one_task(data, capacity=12), jax.random.PRNGKey(3)[None]
    monkeypatch.setattr(FAVAgent, method, interrupted)
    new = {k: np.zeros((1, 1, *v.shape[1:]), np.float32) for k, v in data.items()}
    calls = {
        'offline_chunk': lambda: offline_chunk(agents, buffer, key, 0, 2, 11),
        'online_chunk': lambda: online_chunk(agents, buffer, new, key, 0, 11),
        'policy_action': lambda: policy_action(agents, jnp.zeros((1, 3, 5)), key, 11),
    }
    with pytest.raises(KeyboardInterrupt):
        calls[call]()
    assert went_on


def test_paths_are_read_as_the_shell_would_and_spelled_one_way(tmp_path, monkeypatch):
    """After '=' the shell leaves '~' alone: --run-dir=~/runs made a folder named '~' in the working directory.
    A trailing '/' (tab completion) made the same folder 'other settings' on a resume."""
    monkeypatch.setenv('HOME', str(tmp_path))
    args = parse_args(['--env', 'cube-single', '--run-dir=~/runs/', '--dataset-dir=data/', '--dataset=~/d.npz'], 'o2o')
    assert (args.run_dir, args.dataset_dir, args.dataset) == (str(tmp_path / 'runs'), 'data', str(tmp_path / 'd.npz'))


@pytest.mark.parametrize('place', ['dangling link', '/proc'])
def test_a_run_dir_that_cannot_be_made_is_refused_before_the_data_is_loaded(place, tmp_path, capsys):
    """It was an OSError traceback after the data had been loaded (or generated)."""
    from launch.loop import main

    if place == '/proc':
        run_dir, words = '/proc/fav_runs/run', 'error: --run-dir /proc/fav_runs/run: cannot write in /proc ('
    else:
        os.symlink(tmp_path / 'unmounted', tmp_path / 'scratch')
        run_dir = str(tmp_path / 'scratch' / 'run')
        words = f'{tmp_path / "scratch"} is a link to {tmp_path / "unmounted"}, which does not exist'
    assert main('offline', [*NOWHERE, '--run-dir', run_dir]) == 2  # nowhere.npz: the data would fail next
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'unmounted').exists()


@pytest.mark.parametrize('kept', ['checkpoint.msgpack', 'final.json'])
def test_a_run_without_its_config_json_is_refused_not_resumed_under_new_settings(kept, tmp_path, capsys):
    """A checkpoint without config.json was resumed under whatever settings were given (another seed, other
    network sizes), and config.json rewritten to say so."""
    from launch.loop import main

    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    if kept == 'final.json':
        (run_dir / kept).write_text('{}')
    else:
        save_checkpoint(str(run_dir / kept), dict(step=100))
    assert main('offline', [*NOWHERE, '--run-dir', str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f'{run_dir} holds a run without its config.json, so its settings are unknown' in err, err
    assert sorted(p.name for p in run_dir.iterdir()) == [kept]


def test_a_checkpoint_of_other_network_sizes_is_refused_naming_the_array():
    from launch.training import _same_shapes

    observations, actions = jnp.zeros((1, 4)), jnp.zeros((1, 2))
    small, large = (FAVAgent.create(0, observations, actions, FAVConfig(hidden_dims=(w, w))) for w in (8, 16))
    restored = serialization.from_state_dict(large, serialization.to_state_dict(small))  # flax lets it through
    with pytest.raises(ValueError, match=r"its agent\.actor\.params\['params'\]\['.*'\]\['\w+'\] has shape"):
        _same_shapes(large, restored)
    assert _same_shapes(small, restored) is restored
    # A resume checks each run's checkpoint so: refused in words naming the file, before anything else is restored.
    from launch.training import GroupTrainer

    trainer = types.SimpleNamespace(
        agents=as_group(large), runs=[types.SimpleNamespace(checkpoint_path='/runs/seed0/checkpoint.msgpack')]
    )
    with pytest.raises(CheckpointError, match=r'/runs/seed0/checkpoint\.msgpack does not match .* has shape'):
        GroupTrainer.restore(trainer, [dict(agent=serialization.to_state_dict(small))])


@pytest.mark.parametrize(
    'replaced, log_every', [(True, '10'), (False, '10'), (True, '1000')], ids=['replaced', 'deleted', 'eval-first']
)
def test_a_run_directory_lost_while_the_run_trains_stops_it_before_its_next_write(
    replaced, log_every, dataset, tmp_path, monkeypatch, capsys
):
    """`rm -rf` of the run directory (and a new one made in its place): the run trained on into the new folder
    and finished there without config.json, which the rerun refused; deleted, its next log write failed with a
    message about the paths given. Logs come before checkpoints (every 5000 steps against 100000): both stop,
    and so does an evaluation that comes first (eval-first: the next log row is at the phase's end)."""
    from launch import loop, training

    run_dir = tmp_path / 'run'
    real_chunk, calls = training.offline_chunk, []

    def chunk_then_lose_the_run_dir(*args, **kwargs):
        calls.append(True)
        if len(calls) == 3:  # steps 10..20: logged at 10, not saved yet
            shutil.rmtree(run_dir)
            if replaced:
                run_dir.mkdir()
        return real_chunk(*args, **kwargs)

    monkeypatch.setattr(training, 'offline_chunk', chunk_then_lose_the_run_dir)
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--offline-steps', '40']
    args += ['--log-every', log_every, '--save-every', '1000', '--eval-every', '20', '--updates-per-call', '10']
    args += ['--run-dir', str(run_dir)]
    assert loop.main('offline', [*args, *SMALL]) == 2
    assert capsys.readouterr().err.startswith(f'error: {run_dir} lost its config.json while the run trained')
    assert len(calls) == 3
    assert (list(run_dir.iterdir()) == []) if replaced else not run_dir.exists()  # nothing written there


def test_a_write_into_a_run_directory_deleted_meanwhile_names_the_file_it_was_writing(tmp_path):
    """A run directory deleted while its run trained: the next CSV write failed naming atomic_write's temporary
    file (.train.csv.tmp-<pid>), a name the user never made."""
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    logger = RunLogger(str(run_dir))
    shutil.rmtree(run_dir)
    with pytest.raises(FileNotFoundError) as caught:
        logger.log('train', {'step': 1, 'loss': 0.5})
    assert caught.value.filename == str(run_dir / 'train.csv')


def test_a_file_system_error_is_one_line_and_other_os_errors_are_not_hidden(monkeypatch, capsys):
    import errno

    import launch.loop

    def read_only(args, mode):
        raise OSError(errno.EROFS, 'Read-only file system', '/mnt/runs/seed0')

    monkeypatch.setattr(launch.loop, 'run', read_only)
    assert launch.loop.main('offline', ['--env', 'cube-single']) == 2
    err = capsys.readouterr().err
    assert err == 'error: /mnt/runs/seed0: Read-only file system; check the run, runs and dataset paths given\n'

    def no_file(args, mode):
        raise ConnectionResetError('a socket')

    monkeypatch.setattr(launch.loop, 'run', no_file)
    with pytest.raises(ConnectionResetError):
        launch.loop.main('offline', ['--env', 'cube-single'])


def test_a_full_disk_during_a_save_is_one_line_naming_the_file_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, capsys
):
    """A write or fsync on a full disk raises an OSError that names no file: it was a traceback."""
    import errno

    import launch.loop

    path = tmp_path / 'checkpoint.msgpack'
    save_checkpoint(str(path), dict(step=50))

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_on_a_full_disk(args, mode):
        monkeypatch.setattr(os, 'fsync', no_space)
        save_checkpoint(str(path), dict(step=100))

    monkeypatch.setattr(launch.loop, 'run', save_on_a_full_disk)
    assert launch.loop.main('o2o', ['--env', 'cube-single']) == 1
    err = capsys.readouterr().err
    assert err == f'error: {path}: No space left on device; free some space there, then {RERUN_TO_GO_ON}\n'
    assert load_checkpoint(str(path))['step'] == 50 and os.listdir(tmp_path) == ['checkpoint.msgpack']


def test_list_tasks_into_a_pipe_closed_early_ends_quietly():
    """`--list-tasks offline | head -1`: the reader leaves before the list is written."""
    process = subprocess.Popen(
        [sys.executable, 'launch/offline.py', '--list-tasks', 'offline'],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # before the program (about a second to start) prints anything
    assert process.wait(timeout=120) == 0
    assert process.stderr.read() == b''


@pytest.mark.parametrize('mode', ['offline', 'o2o'])
def test_every_flag_with_a_default_names_it_in_help(mode):
    """`--help` is where a user looks up what a run does unless told otherwise."""
    from launch.settings import build_parser

    for action in build_parser(mode)._actions:
        if action.default in (None, False, True, argparse.SUPPRESS):
            continue
        assert f'default: {action.default}' in (action.help or ''), f'{action.option_strings[0]}: {action.help!r}'


@pytest.mark.parametrize('mode', ['offline', 'o2o'])
def test_help_names_rlpd_only_where_it_is_an_agent(mode):
    """offline.py's --help said '--offline-steps ... (0 with --agent rlpd)', an agent offline.py refuses."""
    from launch.settings import build_parser

    assert ('rlpd' in build_parser(mode).format_help()) == (mode == 'o2o')


@pytest.mark.parametrize('flag', ['--run-dir', '--runs-dir'])
def test_a_file_in_the_way_of_a_run_directory_names_the_flag_given(flag, tmp_path, capsys):
    from launch.loop import main

    root = tmp_path / 'runs'
    run_dir = root / 'cube-single-play-singletask-task1-v0' / 'seed0' if flag == '--run-dir' else root / 'offline'
    run_dir.parent.mkdir(parents=True)
    run_dir.write_text('a file')
    argv = ['--env', 'cube-single', '--task', '1', '--dataset', 'nowhere.npz', '--seeds', '0-1', flag, str(root)]
    assert main('offline', argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f'error: {run_dir} is a file, so ') and err.endswith(f': pass another {flag}'), err
