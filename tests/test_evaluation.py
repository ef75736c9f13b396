"""Evaluation episodes and the protocol's final score."""

import functools
import os
import signal

import gymnasium
import numpy as np
import pytest
from gymnasium.wrappers import RecordEpisodeStatistics

from envs.evaluation import episode_seed, evaluate, evaluation_rounds, final_score
from envs.factory import SUCCESS_TIMING, OwnGlobalRandom, make_env, make_env_pool
from envs.pool import EnvPool, EnvWorkerError, PoolView
from envs.registry import resolve_task


class _FixedOutcomeEnv(gymnasium.Env):
    """Succeeds (terminates) after 1 step, or fails (truncates) after 5 steps."""

    observation_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, succeed):
        self.succeed, self.t = succeed, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.succeed or self.t == 5
        reward = 0.0 if self.succeed else -1.0
        return (
            np.zeros(2, np.float32),
            reward,
            self.succeed,
            done and not self.succeed,
            {'success': float(self.succeed)},
        )


class _FailingEnvRecordingSeeds(_FixedOutcomeEnv):
    """A failing _FixedOutcomeEnv (5 steps an episode) that records the seed of each of its resets."""

    def __init__(self):
        super().__init__(False)
        self.seeds = []

    def reset(self, seed=None, options=None):
        self.seeds.append(seed)
        return super().reset(seed=seed, options=options)


class _ActionHistoryEnv(gymnasium.Env):
    """Observation: [seed of the last reset, steps since it, sum of the actions since it, last action]."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    action_space = gymnasium.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.state = np.array([-1 if seed is None else seed, 0, 0, 0], np.float32)
        return self.state.copy(), {}

    def step(self, action):
        self.state[1:] += [1, action[0], action[0] - self.state[3]]
        return self.state.copy(), 0.0, False, False, {}


def _pool(outcomes):
    return EnvPool([functools.partial(lambda s: RecordEpisodeStatistics(_FixedOutcomeEnv(s)), s) for s in outcomes])


def test_each_copy_runs_its_quota_so_quick_successes_are_not_over_counted():
    env = _pool([True, False])  # copy 0 succeeds in 1 step, copy 1 fails in 5
    result = evaluate(env, lambda obs, t: np.zeros((2, 1), np.float32), 6, [(0, 1)])[0]
    # 3 episodes each: half succeed. Counting the first 6 finished episodes would give 5/6.
    assert result['success'] == 0.5
    assert result['episode_length'] == 3.0 and result['episode_return'] == -2.5
    uneven = evaluate(_pool([True, False]), lambda obs, t: np.zeros((2, 1), np.float32), 5, [(0, 1)])[0]
    assert uneven['success'] == 3 / 5  # 5 episodes: 3 on copy 0, 2 on copy 1


def test_a_group_evaluates_each_run_on_its_own_copies():
    """Two runs of two copies each: run 0's copies always succeed, run 1's always fail."""
    results = evaluate(_pool([True, True, False, False]), lambda obs, t: np.zeros((4, 1), np.float32), 4, [(0,), (1,)])
    assert [r['success'] for r in results] == [1.0, 0.0]
    assert [r['episode_length'] for r in results] == [1.0, 5.0]


def test_each_run_of_a_group_seeds_its_copies_from_its_own_keys_and_t_counts_the_steps():
    """Copy i of run r is first reset with episode_seed(*keys[r], i), as it would be alone, later resets
    continue its generator; `t` (which picks the policy's noise) counts the evaluation's steps."""
    pool = EnvPool([lambda: RecordEpisodeStatistics(_FailingEnvRecordingSeeds()) for _ in range(4)])
    ts = []
    act = lambda obs, t: ts.append(t) or np.zeros((4, 1), np.float32)  # noqa: E731
    evaluate(pool, act, 4, [(7, 1), (8, 1)])  # two runs of two copies, each copy two 5-step episodes
    seeds = [e.unwrapped.seeds for e in pool.local]
    keys = [(7, 1, 0), (7, 1, 1), (8, 1, 0), (8, 1, 1)]
    assert seeds == [[episode_seed(*k), None] for k in keys]
    assert ts == list(range(11))  # 5 steps, the reset step, 5 steps


class _CountingEnv(gymnasium.Env):
    """Observation: [resets so far, steps since the last reset]; truncates after 2 steps."""

    observation_space = gymnasium.spaces.Box(0, np.inf, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-1, 1, (1,), np.float32)
    resets = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.resets, self.t = self.resets + 1, 0
        return np.array([self.resets, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.resets, self.t], np.float32), 0.0, False, self.t == 2, {'success': 0.0}


def test_the_policy_acts_on_each_steps_observation_and_on_the_new_episodes_after_a_reset():
    seen = []
    act = lambda obs, t: seen.append(obs.copy()) or np.zeros((1, 1), np.float32)  # noqa: E731
    evaluate(EnvPool([lambda: RecordEpisodeStatistics(_CountingEnv())]), act, 2, [(0,)])
    # Two 2-step episodes; at the step after the first ended the policy sees its last observation (that
    # action is ignored), then the reset's.
    np.testing.assert_array_equal(seen, [[[1, 0]], [[1, 1]], [[1, 2]], [[2, 0]], [[2, 1]]])  # one copy


def test_a_reset_replays_every_action_in_order_after_seeding_the_copy():
    """How a resumed O2O run puts its env back mid-episode: reset with the episode's seed, then its actions."""
    pool = EnvPool([_ActionHistoryEnv for _ in range(2)])
    observations = pool.reset([1, 0], [7, None], [[[0.5], [0.25], [-0.5]], []])
    np.testing.assert_array_equal(observations[0], [7, 3, 0.25, -0.5])  # copy 1: seed 7, three actions replayed
    np.testing.assert_array_equal(observations[1], [-1, 0, 0, 0])  # copy 0: its generator continued, no replay


def test_a_view_resets_the_copies_it_names():
    pool = EnvPool([lambda: RecordEpisodeStatistics(_FailingEnvRecordingSeeds()) for _ in range(4)])
    PoolView(pool, [3, 1]).reset([0, 1], [5, 6])
    assert [e.unwrapped.seeds for e in pool.local] == [[], [6], [], [5]]


def test_final_score_is_the_mean_of_the_last_three_evaluations():
    assert final_score([0.0, 0.1, 0.2, 0.4, 0.6]) == pytest.approx(40.0)
    assert final_score([0.5]) == 50.0
    with pytest.raises(ValueError, match='no evaluation was run, so there is no final score'):
        final_score([])


def _place_cube_on_target_and_step(env):
    """Teleports the cube onto its target, then takes one zero action."""
    import mujoco

    env.reset(seed=0)
    unwrapped = env.unwrapped
    unwrapped._data.qpos[14:17] = unwrapped._data.mocap_pos[0]
    mujoco.mj_forward(unwrapped._model, unwrapped._data)
    _, reward, terminated, _, info = env.step(np.zeros(5, np.float32))
    return bool(info['success']), terminated, reward


def test_singletask_envs_use_the_papers_success_timing():
    """ogbench >= 1.2 defaults manipulation singletask envs to 'pre'; the paper's numbers are 'post'."""
    import ogbench  # noqa: F401

    task = resolve_task('cube-single', 1)
    env = make_env(task)
    assert SUCCESS_TIMING == 'post' and env.unwrapped._success_timing == 'post'
    # 'post': the step that completes the task is rewarded on that very step.
    assert _place_cube_on_target_and_step(env) == (True, True, 0.0)
    # The library default ('pre') judges the state before the step, so the same step is not a success.
    default_env = gymnasium.make(task.env_id)
    assert default_env.unwrapped._success_timing == 'pre'
    assert _place_cube_on_target_and_step(default_env)[0] is False


def test_evaluation_rounds_cover_each_run_once_on_copies_of_its_task():
    tasks = ['a', 'a', 'a', 'b', 'b', 'b']  # a group of 2 tasks × 3 seeds, 2 copies per run
    copy_tasks, rounds = evaluation_rounds(tasks, copies_per_run=2, max_copies=8)
    assert copy_tasks == ['a'] * 4 + ['b'] * 4  # 2 runs of each task at a time: 8 copies alive
    assert [runs for runs, _ in rounds] == [[0, 1, 3, 4], [2, 5]]
    for runs, copies in rounds:
        assert len(copies) == 2 * len(runs) and len(set(copies)) == len(copies)
        for k, r in enumerate(runs):
            assert {copy_tasks[c] for c in copies[2 * k : 2 * k + 2]} == {tasks[r]}
    # Fewer copies than one run per task: each task still keeps one run's copies.
    copy_tasks, rounds = evaluation_rounds(tasks, copies_per_run=2, max_copies=1)
    assert len(copy_tasks) == 4 and len(rounds) == 3
    # Enough copies: the whole group in one round, on no more copies than its runs step (each is an env in memory).
    copy_tasks, rounds = evaluation_rounds(tasks, copies_per_run=2, max_copies=100)
    assert copy_tasks == ['a'] * 6 + ['b'] * 6 and len(rounds) == 1


def test_a_group_evaluated_in_rounds_gives_each_run_the_results_of_one_round():
    """Runs whose copies succeed, fail, succeed: the same per-run results with one copy alive per round."""
    outcomes = [True, False, True]
    whole = evaluate(_pool(outcomes), lambda obs, t: np.zeros((3, 1), np.float32), 2, [(0,), (1,), (2,)])
    copy_tasks, rounds = evaluation_rounds(['x'] * 3, copies_per_run=1, max_copies=1)
    pool = EnvPool([functools.partial(lambda s: RecordEpisodeStatistics(_FixedOutcomeEnv(s)), s) for s in outcomes[:1]])
    results = {}
    for runs, copies in rounds:
        # The single live copy stands in for each run's own copy in turn (same seeds, fresh resets).
        pool.local[0].env.succeed = outcomes[runs[0]]
        view = PoolView(pool, copies)
        (results[runs[0]],) = evaluate(view, lambda obs, t: np.zeros((1, 1), np.float32), 2, [(runs[0],)])
    assert [results[r] for r in range(3)] == whole
    assert [r['success'] for r in whole] == [1.0, 0.0, 1.0]
    # A view steps the copies it names: a run on copies 1 and 3 of a fail/succeed pool always succeeds.
    pool = _pool([False, True, False, True])
    act = lambda obs, t: np.zeros((2, 1), np.float32)  # noqa: E731
    assert evaluate(PoolView(pool, [1, 3]), act, 2, [(0,)])[0]['success'] == 1.0
    assert evaluate(PoolView(pool, [0, 2]), act, 2, [(0,)])[0]['success'] == 0.0


@pytest.mark.parametrize('workers, processes', [(4, 3), (2, 2)])
def test_copies_spread_over_worker_processes_give_what_they_give_in_this_process(workers, processes):
    """3 copies asked of 4 workers: one process per copy; of 2 workers: copies 1 and 2 share the second. Each
    copy is stepped as itself, whichever process holds it."""
    make = functools.partial(gymnasium.make, 'Pendulum-v1')
    local, spread = EnvPool([make] * 3), EnvPool([make] * 3, workers=workers)
    try:
        assert len(spread.processes) == processes
        results = [
            (pool.reset([2, 0, 1], seeds=[12, 10, 11]), pool.step(np.array([[0.5], [-1.0], [2.0]], np.float32)))
            for pool in (local, spread)
        ]
        np.testing.assert_equal(results[1], results[0])  # observations, rewards, flags (nan equal to nan)
    finally:
        local.close()
        spread.close()


def test_a_step_that_ends_no_episode_reports_no_success_and_no_episode_return_or_length():
    """Pendulum's info has neither 'success' nor, before its episode ends, 'episode': no success (not a
    success) and NaN return and length."""
    pool = EnvPool([lambda: RecordEpisodeStatistics(gymnasium.make('Pendulum-v1'))])
    pool.reset([0], [0])
    ((_, _, terminated, truncated, success, episode_return, length),) = pool.step(np.zeros((1, 1), np.float32))
    assert (terminated, truncated, success) == (False, False, 0.0)
    assert np.isnan(episode_return) and np.isnan(length)


def test_a_worker_process_ignores_ctrl_c_which_its_parent_handles():
    """Ctrl-C reaches the whole process group: the parent handles it and closes the pool; a worker stopped by it
    would fail the step in progress with a traceback of its own."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # the worker starts at default, not ignoring
    try:
        pool = EnvPool([functools.partial(gymnasium.make, 'Pendulum-v1')], workers=1)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        pool.reset([0], [0])
        os.kill(pool.processes[0].pid, signal.SIGINT)
        assert len(pool.step(np.zeros((1, 1), np.float32))) == 1
        assert pool.processes[0].is_alive()
    finally:
        pool.close()


class _DrawsFromTheGlobalGenerator(gymnasium.Env):
    """An env that, like OGBench's mazes, draws its start from np.random at reset."""

    observation_space = gymnasium.spaces.Box(0, 1, (1,))
    action_space = gymnasium.spaces.Box(0, 1, (1,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([np.random.uniform()]), {}


def test_a_copy_draws_from_a_global_generator_of_its_own_seeded_at_reset():
    def episodes():
        env = OwnGlobalRandom(_DrawsFromTheGlobalGenerator())
        return [env.reset(seed=5)[0][0], env.reset()[0][0], env.reset()[0][0]]  # None: its generator goes on

    np.random.seed(0)
    outside = np.random.get_state()[1].copy()
    first = episodes()
    np.testing.assert_array_equal(np.random.get_state()[1], outside)  # the process's generator is left as it was
    np.random.uniform()  # other draws in the process do not change a copy's episodes
    assert episodes() == first and len(set(first)) == 3


def test_closing_a_pool_with_a_dead_worker_stops_the_others():
    """close() often runs after an error, when a worker may have died: its broken pipe must not stop the rest."""
    task = resolve_task('cube-single', 1)
    pool = make_env_pool([task, task])  # two worker processes
    processes = list(pool.processes)
    processes[0].kill()
    processes[0].join()
    pool.close()
    assert len(processes) == 2 and not any(p.is_alive() for p in processes)


def test_a_worker_that_keeps_silent_is_named_once_and_still_waited_for(monkeypatch, capsys):
    """A stopped worker (SIGSTOP) hung the run without a word; a slow one must still be waited for."""
    import threading

    import envs.pool

    pool = EnvPool([functools.partial(gymnasium.make, 'Pendulum-v1')], workers=1)
    pid = pool.processes[0].pid
    continued = threading.Timer(1.0, os.kill, (pid, signal.SIGCONT))
    try:
        pool.reset([0], [0])  # the worker's start (a new interpreter, its imports) may take longer than 0.2 s
        monkeypatch.setattr(envs.pool, 'SILENT_WORKER_S', 0.2)
        os.kill(pid, signal.SIGSTOP)
        continued.start()
        assert len(pool.step(np.zeros((1, 1), np.float32))) == 1
    finally:
        continued.cancel()
        os.kill(pid, signal.SIGCONT)
        pool.close()
    assert capsys.readouterr().err == (
        f'note: env worker process {pid} has not answered in 0.2 s; still waiting (if it was stopped, '
        f'`kill -CONT {pid}` continues it; Ctrl-C stops the run, keeping its last checkpoint)\n'
    )


def test_closing_a_pool_with_a_stopped_worker_ends_it():
    """A stopped worker (SIGSTOP) answers no 'close' and stays through SIGTERM: its run, stopped by Ctrl-C or
    SIGTERM, printed its one line, then hung for good in Python's exit, which joins every worker process."""
    pool = EnvPool([functools.partial(gymnasium.make, 'Pendulum-v1')], workers=1)
    process = pool.processes[0]
    try:
        pool.reset([0], [0])
        os.kill(process.pid, signal.SIGSTOP)
        pool.close()
        assert not process.is_alive()
    finally:
        process.kill()  # SIGKILL ends a stopped process too
        process.join()


class _ExitsOnStep(_FixedOutcomeEnv):
    """A worker process that dies while it steps, after it took the command (killed for memory mid-step, say)."""

    def step(self, action):
        os._exit(1)


def test_a_worker_that_dies_while_it_steps_is_one_error():
    pool = EnvPool([functools.partial(_ExitsOnStep, False)], workers=1)
    try:
        pool.reset([0], [0])
        with pytest.raises(EnvWorkerError, match='an env worker process exited'):
            pool.step(np.zeros((1, 1), np.float32))
    finally:
        pool.close()


def test_a_dead_worker_is_one_error_and_a_dead_parent_lets_workers_exit_quietly():
    """A worker killed mid-run is an EnvWorkerError (the loop prints it in one line), not an EOFError
    traceback; a worker whose parent is gone (its pipe closed) exits cleanly instead of with a traceback."""
    task = resolve_task('cube-single', 1)
    pool = make_env_pool([task, task])  # two worker processes
    processes = list(pool.processes)
    try:
        processes[0].kill()
        processes[0].join()
        with pytest.raises(EnvWorkerError, match='an env worker process exited'):
            pool.step(np.zeros((2, 5), np.float32))
        pool.connections[1].close()  # as when the parent dies: the worker reads the end of its pipe
        processes[1].join(timeout=30)
        assert processes[1].exitcode == 0
    finally:
        pool.close()
