"""OGBench locomotion (navigate) tasks: their envs, a file in the official navigate format through the
loader (rewards and masks relabelled by OGBench from qpos), and short offline and O2O runs on it."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from datasets.ogbench_data import load_task_data
from envs.factory import make_env, make_env_pool
from envs.registry import FAMILIES, resolve_task

REPO = Path(__file__).resolve().parents[1]
NAVIGATE = [name for name in FAMILIES if name.endswith('-navigate')]
# (observation, action, qpos, qvel) sizes, as the official files have them.
SIZES = {
    'antmaze-large-navigate': (29, 8, 15, 14),
    'antmaze-giant-navigate': (29, 8, 15, 14),
    'humanoidmaze-medium-navigate': (69, 21, 28, 27),
    'humanoidmaze-large-navigate': (69, 21, 28, 27),
    'antsoccer-arena-navigate': (42, 8, 22, 20),
}


@pytest.mark.parametrize('family', NAVIGATE)
def test_task1_env_creates_and_steps(family):
    task = resolve_task(family, 1)
    env = make_env(task)
    try:
        observation, _ = env.reset(seed=0)
        obs_dim, act_dim, qpos_dim, qvel_dim = SIZES[family]
        assert observation.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
        assert env.unwrapped.data.qpos.shape == (qpos_dim,) and env.unwrapped.data.qvel.shape == (qvel_dim,)
        assert env.spec.max_episode_steps == FAMILIES[family].episode_length
        for _ in range(3):
            observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        # Singletask navigate reward: success - 1, so -1 away from the goal.
        assert reward == -1.0 and not terminated and not truncated and info['success'] == 0.0
    finally:
        env.close()


def test_navigate_episodes_depend_only_on_their_seed():
    """OGBench's mazes draw each episode's start and goal noise from NumPy's global generator. A copy's
    episodes must still depend only on its seed: in worker processes or alone, whatever the global
    generator holds, and without moving the global generator of the process."""
    task = resolve_task('antmaze-large-navigate', 1)
    pool = make_env_pool([task, task])  # two worker processes, their global generators from OS entropy
    try:
        in_pool = pool.reset([0, 1], [5, 6]) + pool.reset([0, 1], [None, None])  # seeded, then continued
    finally:
        pool.close()
    alone = []
    for seed, disturbance in ((5, 1), (6, 2)):
        env = make_env(task)
        np.random.seed(disturbance)
        alone.append(env.reset(seed=seed)[0])
        assert np.random.get_state()[1].tolist() == np.random.RandomState(disturbance).get_state()[1].tolist()
        np.random.seed(disturbance + 10)
        alone.append(env.reset()[0])
        env.close()
    np.testing.assert_array_equal(np.stack(in_pool), np.stack([alone[0], alone[2], alone[1], alone[3]]))
    assert not np.allclose(alone[0][:2], alone[2][:2])  # the start xy's noise differs between seeds


def write_navigate_file(path, family, goal_xy, episodes=2, length=2001, seed=0):
    """An official-format navigate file (antmaze-giant's 2001-row episodes) and its -val file; raw rows
    3 and length + 10 stand at `goal_xy` (the ball's position for antsoccer, the agent's otherwise)."""
    obs_dim, act_dim, qpos_dim, qvel_dim = SIZES[family]
    rows = episodes * length
    rng = np.random.default_rng(seed)
    qpos = rng.uniform(-1, 1, (rows, qpos_dim)).astype(np.float32)
    xy = slice(15, 17) if family.startswith('antsoccer') else slice(0, 2)
    qpos[:, xy] = np.asarray(goal_xy, np.float32) + 50.0  # far from the goal...
    for r in (3, length + 10):
        qpos[r, xy] = goal_xy  # ...but for these rows
    arrays = dict(
        observations=rng.normal(size=(rows, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (rows, act_dim)).astype(np.float32),
        terminals=np.zeros(rows, bool),
        qpos=qpos,
        qvel=rng.normal(size=(rows, qvel_dim)).astype(np.float32),
    )
    arrays['terminals'][length - 1 :: length] = True
    np.savez(path, **arrays)
    np.savez(str(path).replace('.npz', '-val.npz'), **arrays)
    return arrays


def _goal_xy(env):
    env.reset(seed=0)
    return np.asarray(env.unwrapped.cur_goal_xy, np.float32)


@pytest.mark.parametrize('family', ['antmaze-giant-navigate', 'antsoccer-arena-navigate'])
def test_official_navigate_file_loads_with_relabelled_rewards(family, tmp_path):
    task = resolve_task(family, 1)
    env = make_env(task)
    try:
        path = tmp_path / f'{task.dataset_name}.npz'
        raw = write_navigate_file(path, family, _goal_xy(env))
        train, val = load_task_data(task, env, dataset_path=str(path))
    finally:
        env.close()
    # The last row of each 2001-row episode has no next observation and is dropped.
    assert len(train['observations']) == len(val['observations']) == 2 * 2000
    np.testing.assert_array_equal(train['observations'][:2000], raw['observations'][:2000])
    np.testing.assert_array_equal(train['next_observations'][:2000], raw['observations'][1:2001])
    np.testing.assert_array_equal(train['observations'][2000:], raw['observations'][2001:4001])
    # Raw goal rows 3 and 2011 are loaded rows 3 and 2010: reward 0 and no bootstrap there, -1 elsewhere.
    at_goal = np.zeros(4000, bool)
    at_goal[[3, 2010]] = True
    np.testing.assert_array_equal(train['rewards'], np.where(at_goal, 0.0, -1.0).astype(np.float32))
    np.testing.assert_array_equal(train['masks'], np.where(at_goal, 0.0, 1.0).astype(np.float32))
    np.testing.assert_array_equal(np.flatnonzero(train['terminals']), [1999, 3999])


@pytest.fixture(scope='module')
def antmaze_large_file(tmp_path_factory):
    task = resolve_task('antmaze-large-navigate', 1)
    env = make_env(task)
    try:
        path = tmp_path_factory.mktemp('navigate') / 'antmaze-large-navigate-v0.npz'
        write_navigate_file(path, task.family.name, _goal_xy(env), length=301)
    finally:
        env.close()
    return str(path)


@pytest.mark.slow
def test_navigate_o2o_runs_end_to_end(antmaze_large_file, tmp_path):
    """Offline steps, then online steps in the env, on a file in the official format."""
    args = ['--env', 'antmaze-large-navigate', '--task', '1', '--dataset', antmaze_large_file]
    args += ['--offline-steps', '100', '--online-steps', '50', '--buffer-capacity', '1000', '--eval-every', '100']
    args += ['--eval-episodes', '1', '--eval-envs', '1', '--updates-per-call', '50', '--no-progress']
    args += ['--agent.hidden_dims=32,32', '--agent.batch_size=32']
    run_dir = tmp_path / 'run'
    result = subprocess.run(
        [sys.executable, 'launch/o2o.py', *args, '--run-dir', str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    final = json.loads((run_dir / 'final.json').read_text())
    assert final['steps'] == 150 and 0 <= final['offline_score'] <= 100 and 0 <= final['online_score'] <= 100
    config = json.loads((run_dir / 'config.json').read_text())
    assert config['agent_config']['q_agg'] == 'min' and config['agent_config']['beta'] == 2.0  # registry settings
    assert config['buffer_capacity'] == 1000


@pytest.mark.parametrize(
    'family', ['antmaze-large-navigate', 'humanoidmaze-medium-navigate', 'antsoccer-arena-navigate']
)
def test_making_a_maze_env_leaves_no_file_in_the_temp_folder(family, tmp_path, monkeypatch):
    """OGBench's mazes write each maze's XML into the temp folder and never remove it."""
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    env = make_env(resolve_task(family))
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.close()
    assert list(tmp_path.iterdir()) == [] and tempfile.tempdir == str(tmp_path)
