"""D4RL AntMaze: both backends' data processed as the reference does (boundaries, masks, rewards),
their envs, the backend choice, and one-line messages when data or a backend is missing."""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import types
import urllib.request
import warnings
from pathlib import Path

import gymnasium

# The test extra installs h5py, minari and gymnasium-robotics: only the legacy D4RL backend (Python 3.10,
# MuJoCo 2.1) may be missing, and only its tests are skipped.
import h5py
import minari
import numpy as np
import pytest

from datasets.buffer import ACTION_CLIP
from datasets.d4rl_data import D4RL_FILES, DatasetError, load_d4rl_data, minari_id
from envs.factory import (
    MINARI_ENV_IDS,
    MINARI_MAZES,
    OwnGlobalRandom,
    _GymToGymnasium,
    _import_failure,
    make_env,
    with_backend,
)
from envs.registry import SUITES, resolve_task

REPO = Path(__file__).resolve().parents[1]
D4RL_TASKS = [name for name in SUITES['offline'] if name.endswith('-v2')]
LEGACY_FAILURE = _import_failure('gym', 'd4rl')
NO_LEGACY = f'legacy d4rl is not installed here ({LEGACY_FAILURE}); see the README for its Python 3.10 setup'
needs_legacy = pytest.mark.skipif(LEGACY_FAILURE is not None, reason=NO_LEGACY)


def _dims_env(obs_dim=29, act_dim=8):
    """Just the spaces: the loader checks the data's sizes against the env's."""
    box = lambda n: gymnasium.spaces.Box(-1, 1, (n,))  # noqa: E731
    return types.SimpleNamespace(observation_space=box(obs_dim), action_space=box(act_dim))


def _task(name, backend):
    """The task with a backend set, whether or not that backend is installed (the data needs none)."""
    return dataclasses.replace(resolve_task(name), backend=backend)


# ------------------------------------------------------------------------------------------------
# Legacy D4RL HDF5 files


ACTIONS = np.float32([-1, 1, -1.5, 1.5, 0.5, -0.5, 0, 0.25])


def write_d4rl_file(path, column=False):
    """7 rows: episode A = rows 0-3 (timeout on row 3), episode B = rows 4-6 (the file's end). Row 1 is at
    the goal (reward 1, terminal 1). Observation row i is filled with i; actions ACTIONS (at and past the box's
    bounds, which the loader clips). `column`: rewards, terminals and timeouts stored as (7, 1), which
    d4rl.get_dataset also reads."""

    rows = 7
    shaped = (lambda a: a[:, None]) if column else (lambda a: a)  # noqa: E731
    with h5py.File(path, 'w') as f:
        f['observations'] = np.repeat(np.arange(rows, dtype=np.float32)[:, None], 29, axis=1)
        f['actions'] = np.tile(ACTIONS, (rows, 1))
        f['rewards'] = shaped(np.array([0, 1, 0, 0, 0, 0, 0], np.float32))
        f['terminals'] = shaped(np.array([0, 1, 0, 0, 0, 0, 0], bool))
        f['timeouts'] = shaped(np.array([0, 0, 0, 1, 0, 0, 0], bool))


@pytest.mark.parametrize('column', [False, True])
def test_legacy_file_gives_the_reference_transitions(tmp_path, column):
    path = tmp_path / 'antmaze.hdf5'
    write_d4rl_file(path, column)
    data = load_d4rl_data(_task('antmaze-umaze-v2', 'd4rl'), _dims_env(), dataset_path=str(path))
    # qlearning_dataset: pairs (i, i+1) for i < 6 but the timeout row 3 -> rows 0, 1, 2, 4, 5.
    np.testing.assert_array_equal(data['observations'][:, 0], [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(data['next_observations'][:, 0], [1, 2, 3, 5, 6])
    # Episode ends where the next observation is not the following row's observation, and at the end.
    np.testing.assert_array_equal(data['terminals'], [0, 0, 1, 0, 1])
    np.testing.assert_array_equal(data['masks'], [1, 0, 1, 1, 1])  # no bootstrap past the goal
    np.testing.assert_array_equal(data['rewards'], [-1, 0, -1, -1, -1])  # r - 1
    clip = np.float32(ACTION_CLIP)  # into the open box, on both sides
    np.testing.assert_array_equal(data['actions'], np.tile([-clip, clip, -clip, clip, 0.5, -0.5, 0, 0.25], (5, 1)))
    assert all(
        v.dtype == np.float32 and v.ndim == (2 if 'observations' in k or k == 'actions' else 1) for k, v in data.items()
    )


def test_legacy_file_missing_or_foreign_is_one_line(tmp_path, monkeypatch):
    import datasets.d4rl_data as d4rl_data

    monkeypatch.setattr(d4rl_data, '_download_d4rl', lambda url, path: 'no route to host')
    task = _task('antmaze-large-play-v2', 'd4rl')
    with pytest.raises(DatasetError) as error:
        load_d4rl_data(task, _dims_env(), dataset_dir=str(tmp_path / 'd4rl'))
    assert not (tmp_path / 'd4rl').exists()  # the failed download left no empty folders behind
    message = str(error.value)
    assert 'Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5' in message
    assert str(tmp_path) in message and 'ant_maze_v2/' in message and '--backend minari' in message
    assert '\n' not in message
    with pytest.raises(DatasetError) as error:  # not h5py's error, which would read as a corrupt file
        load_d4rl_data(task, _dims_env(), dataset_path=str(tmp_path / 'nowhere.hdf5'))
    assert str(error.value) == f'dataset file {tmp_path / "nowhere.hdf5"} does not exist'
    (tmp_path / 'foreign.hdf5').write_bytes(b'not hdf5')
    with pytest.raises(DatasetError, match='not a readable HDF5'):
        load_d4rl_data(task, _dims_env(), dataset_path=str(tmp_path / 'foreign.hdf5'))

    with h5py.File(tmp_path / 'ragged.hdf5', 'w') as f:  # every key, but one array a row short
        for key, rows in [('observations', 5), ('actions', 5), ('rewards', 5), ('terminals', 4), ('timeouts', 5)]:
            f[key] = np.zeros((rows, 2) if key in ('observations', 'actions') else rows, np.float32)
    with pytest.raises(DatasetError, match=r"need one length .*'terminals': 4"):
        load_d4rl_data(task, _dims_env(), dataset_path=str(tmp_path / 'ragged.hdf5'))


def test_legacy_file_too_short_or_of_other_dims_is_refused(tmp_path):
    task = _task('antmaze-umaze-v2', 'd4rl')
    write_d4rl_file(tmp_path / 'antmaze.hdf5')  # 29-dim observations, 8-dim actions
    for obs_dim, act_dim in ((30, 8), (28, 8), (29, 7)):
        expected = rf'dims \(29, 8\) but the d4rl env expects \({obs_dim}, {act_dim}\)'
        with pytest.raises(DatasetError, match=expected):
            load_d4rl_data(task, _dims_env(obs_dim, act_dim), dataset_path=str(tmp_path / 'antmaze.hdf5'))
    with h5py.File(tmp_path / 'one_row.hdf5', 'w') as f:  # one row: no transition at all
        for key in ('observations', 'actions', 'rewards', 'terminals', 'timeouts'):
            f[key] = np.zeros({'observations': (1, 29), 'actions': (1, 8)}.get(key, 1), np.float32)
    with pytest.raises(DatasetError, match=r"2 rows or more\), got \{'observations': 1"):
        load_d4rl_data(task, _dims_env(), dataset_path=str(tmp_path / 'one_row.hdf5'))


def test_legacy_dataset_dir_comes_before_the_environment_variable(tmp_path, monkeypatch):
    import datasets.d4rl_data as d4rl_data

    fetched = []
    monkeypatch.setattr(d4rl_data, '_download_d4rl', lambda url, path: fetched.append(path) or 'offline')
    monkeypatch.setenv('D4RL_DATASET_DIR', str(tmp_path / 'from_env'))
    task = _task('antmaze-umaze-v2', 'd4rl')
    for dataset_dir in (str(tmp_path / 'given'), None):
        with pytest.raises(DatasetError):
            load_d4rl_data(task, _dims_env(), dataset_dir=dataset_dir)
    name = D4RL_FILES['antmaze-umaze-v2']
    assert fetched == [str(tmp_path / 'given' / name), str(tmp_path / 'from_env' / name)]


def test_legacy_download_cut_short_leaves_no_partial_file(tmp_path, monkeypatch):
    """A connection lost mid-download leaves nothing under the file's name: a partial file there would be
    read (and refused as corrupt) by every later run instead of being downloaded again."""

    class CutResponse:  # one chunk of the file, then a timeout
        chunks = [b'\x89HDF\r\n\x1a\n' + bytes(1000)]

        def __enter__(self):
            return self

        def __exit__(self, *error):
            return False

        def read(self, size):
            if self.chunks:
                return self.chunks.pop()
            raise TimeoutError('timed out')

    monkeypatch.setattr(urllib.request, 'urlopen', lambda url, timeout: CutResponse())
    directory = tmp_path / 'd4rl'
    with pytest.raises(DatasetError, match='could not be downloaded \\(timed out\\)'):
        load_d4rl_data(_task('antmaze-umaze-v2', 'd4rl'), _dims_env(), dataset_dir=str(directory))
    assert not directory.exists()  # no partial file (nor temporary one) in it, so the folder went too


class OldAntMaze:
    """gym 0.23 API: seed(), reset() -> obs, step -> 4-tuple, TimeLimit flag in info. Like D4RL's v2 AntMaze,
    reset draws a goal from NumPy's global generator; the observation is [goal, start pose from its seed]."""

    observation_space = action_space = gymnasium.spaces.Box(-1, 1, (2,))
    unwrapped = property(lambda self: self)

    def seed(self, seed):
        self.pose_rng = np.random.RandomState(seed + 1000)

    def reset(self):
        self.t = 0
        return np.array([np.random.uniform(), self.pose_rng.uniform()])

    def step(self, action):
        self.t += 1
        at_goal = self.t == 2
        info = {'TimeLimit.truncated': True} if self.t == 3 else {}
        return np.ones(2), float(at_goal), at_goal or self.t == 3, info


def test_legacy_env_adapter_maps_the_old_gym_api():
    env = _GymToGymnasium(OldAntMaze())
    observation, _ = env.reset(seed=0)
    assert observation.dtype == np.float32
    assert env.step(0)[1:4] == (0.0, False, False)
    _, reward, terminated, truncated, info = env.step(0)
    assert (reward, terminated, truncated, info['success']) == (1.0, True, False, 1.0)  # goal: a success
    _, reward, terminated, truncated, info = env.step(0)
    assert (terminated, truncated, info['success']) == (False, True, 0.0)  # time limit: not one


def test_legacy_env_episodes_depend_only_on_their_seed():
    """Each copy's goals come from its own generator (seeded by reset), never from NumPy's global one."""
    goals = lambda seed: np.random.RandomState(seed).uniform(size=2)  # noqa: E731  (its first two goals)
    poses = np.random.RandomState(1007).uniform(size=2)
    a, b = OwnGlobalRandom(_GymToGymnasium(OldAntMaze())), OwnGlobalRandom(_GymToGymnasium(OldAntMaze()))
    outside = np.random.get_state()
    first = a.reset(seed=7)[0], b.reset(seed=8)[0], a.reset()[0], b.reset()[0]  # interleaved copies
    np.testing.assert_allclose(first[0], [goals(7)[0], poses[0]], rtol=1e-6)
    np.testing.assert_allclose(first[1][0], goals(8)[0], rtol=1e-6)
    np.testing.assert_allclose(first[2], [goals(7)[1], poses[1]], rtol=1e-6)  # seed None: continues its own
    np.testing.assert_allclose(first[3][0], goals(8)[1], rtol=1e-6)
    assert np.random.get_state()[1].tolist() == outside[1].tolist()  # the global generator is untouched


@needs_legacy
def test_legacy_env_creates_and_steps():
    env, twin = make_env(_task('antmaze-umaze-v2', 'd4rl')), make_env(_task('antmaze-umaze-v2', 'd4rl'))
    observation, _ = env.reset(seed=0)
    assert observation.shape == (29,)
    assert env.step(env.action_space.sample())[0].shape == (29,)
    goal = lambda e: e.unwrapped.env.target_goal  # noqa: E731  (D4RL draws one per episode)
    first = observation, goal(env), env.reset()[0], goal(env)
    again = twin.reset(seed=0)[0], goal(twin), twin.reset()[0], goal(twin)
    for x, y in zip(first, again, strict=True):  # the same seed: the same start poses and goals
        np.testing.assert_array_equal(x, y)
    twin.reset(seed=1)
    assert not np.array_equal(goal(twin), first[1])  # another seed: another goal


# ------------------------------------------------------------------------------------------------
# Minari


UMAZE_GOAL = np.array([-4.0, 4.0])  # the umaze evaluation maze's goal cell (row 1, column 1), in xy
# Two episodes (3 and 2 steps) of ant xy (`achieved_goal`). Their stored rewards are for a goal drawn per
# episode at (30, 0) (Minari's AntMaze never terminates); the evaluation goal is reached on the first
# two steps of episode 0 (the next xy within 0.45 of it).
MINARI_XY = [[(0, 0), UMAZE_GOAL, UMAZE_GOAL + (0.2, -0.3), (30, 0)], [(0, 1), (10, 1), (20, 1)]]
MINARI_STORED_REWARDS = [[0, 0, 1], [0, 0]]


def write_minari_dataset(root, task_name='antmaze-umaze-v2', empty=False):
    """The episodes of MINARI_XY (none with `empty`) under `root`/<Minari id>; observation = 0.5; action t of an
    episode is (t / 4, 2, ..., 2)."""
    from minari.data_collector import EpisodeBuffer

    def episode(xy, rewards):
        steps = len(rewards)
        return EpisodeBuffer(
            observations=dict(
                observation=np.full((steps + 1, 27), 0.5),
                achieved_goal=np.asarray(xy, np.float64),
                desired_goal=np.tile([30.0, 0.0], (steps + 1, 1)),
            ),
            actions=np.column_stack([np.arange(steps) / 4, np.full((steps, 7), 2.0)]).astype(np.float32),
            rewards=np.asarray(rewards, np.float64),
            terminations=np.zeros(steps, bool),
            truncations=np.eye(1, steps, steps - 1, dtype=bool)[0],
        )

    spaces = make_env(_task(task_name, 'minari')).unwrapped
    previous = os.environ.get('MINARI_DATASETS_PATH')
    os.environ['MINARI_DATASETS_PATH'] = str(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # minari asks for author, description, ... metadata
            minari.create_dataset_from_buffers(
                minari_id(resolve_task(task_name)),
                [] if empty else [episode(*e) for e in zip(MINARI_XY, MINARI_STORED_REWARDS, strict=True)],
                observation_space=spaces.observation_space,
                action_space=spaces.action_space,
            )
    finally:
        if previous is None:
            del os.environ['MINARI_DATASETS_PATH']
        else:
            os.environ['MINARI_DATASETS_PATH'] = previous
    return root / minari_id(resolve_task(task_name))


@pytest.fixture(scope='module')
def minari_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('minari')
    write_minari_dataset(root)
    return root


def test_minari_dataset_gives_the_reference_transitions(minari_root):
    task = _task('antmaze-umaze-v2', 'minari')
    env = make_env(task)
    try:
        np.testing.assert_array_equal(env.unwrapped.maze.unique_goal_locations[0], UMAZE_GOAL)
        by_dir = load_d4rl_data(task, env, dataset_dir=str(minari_root))
        by_path = load_d4rl_data(task, env, dataset_path=str(minari_root / 'D4RL/antmaze/umaze-v1'))
    finally:
        env.close()
    for k in by_dir:
        np.testing.assert_array_equal(by_dir[k], by_path[k])
    data = by_dir
    # The 29-dim state is achieved_goal (xy) then observation.
    xy = [np.asarray(e, np.float32) for e in MINARI_XY]
    np.testing.assert_array_equal(data['observations'][:, :2], np.concatenate([e[:-1] for e in xy]))
    np.testing.assert_array_equal(data['next_observations'][:, :2], np.concatenate([e[1:] for e in xy]))
    assert np.all(data['observations'][:, 2:] == 0.5) and data['observations'].shape == (5, 29)
    np.testing.assert_array_equal(data['terminals'], [0, 0, 1, 0, 1])
    # Relabelled for the evaluation goal, as D4RL's files are (the stored rewards, for other goals, are not used).
    np.testing.assert_array_equal(data['masks'], [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data['rewards'], [0, 0, -1, -1, -1])
    np.testing.assert_array_equal(data['actions'][:, 0], [0, 0.25, 0.5, 0, 0.25])  # each with its own state
    assert (data['actions'][:, 1:] == np.float32(ACTION_CLIP)).all()  # out of range: the loader clips


@pytest.mark.parametrize('name', D4RL_TASKS)
def test_minari_evaluation_maze_has_the_walls_of_the_data_maze(name, tmp_path, monkeypatch):
    """Minari's data was collected on each env's own map; its evaluation map must keep those walls and only
    place a start and a goal (Minari's umaze evaluation map is turned 180°, Farama-Foundation/Minari#304)."""
    import gymnasium_robotics

    gymnasium.register_envs(gymnasium_robotics)
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # where the env writes its maze's XML (and leaves it)
    data_env = gymnasium.make(MINARI_ENV_IDS[name])
    walls = lambda maze: [[int(cell == 1) for cell in row] for row in maze]  # noqa: E731
    try:
        assert walls(MINARI_MAZES[name.split('-')[1]]) == walls(data_env.unwrapped.maze.maze_map)
        cells = [cell for row in MINARI_MAZES[name.split('-')[1]] for cell in row]
        assert cells.count('r') == 1 and cells.count('g') == 1  # a fixed start cell and one goal
    finally:
        data_env.close()


def test_making_a_minari_env_leaves_no_file_in_the_temp_folder(tmp_path, monkeypatch):
    """gymnasium-robotics writes each maze's XML into the temp folder and never removes it."""
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    env = make_env(_task('antmaze-umaze-v2', 'minari'))
    observation, _ = env.reset(seed=0)
    assert observation.shape == (29,) and np.isfinite(env.step(env.action_space.sample())[0]).all()
    env.close()
    assert list(tmp_path.iterdir()) == [] and tempfile.tempdir == str(tmp_path)


def test_minari_env_state_is_d4rls_qpos_then_qvel():
    """The Minari env's 29-dim state is laid out as D4RL's (and as the data's, achieved_goal then
    observation): the ant's qpos (xy first), then its qvel."""
    env = make_env(_task('antmaze-umaze-v2', 'minari'))
    try:
        env.reset(seed=0)
        observation = env.step(np.full(8, 0.3))[0]
        ant = env.unwrapped.ant_env.data
        np.testing.assert_array_equal(observation, np.concatenate([ant.qpos, ant.qvel]))
    finally:
        env.close()


def test_minari_dataset_missing_is_one_line(tmp_path):
    task = _task('antmaze-medium-play-v2', 'minari')
    with pytest.raises(DatasetError) as error:
        load_d4rl_data(task, _dims_env(), dataset_dir=str(tmp_path / 'd4rl'))
    assert not (tmp_path / 'd4rl').exists()  # the failed download left no empty folders behind
    message = str(error.value)
    assert 'D4RL/antmaze/medium-play-v1' in message and 'minari download' in message and '\n' not in message
    with pytest.raises(DatasetError, match=r'^--dataset .* is not a Minari dataset \(no data/ directory in it\)$'):
        load_d4rl_data(task, _dims_env(), dataset_path=str(tmp_path))
    with pytest.raises(DatasetError, match=r'^--dataset .*/nowhere is not a Minari dataset \(it does not exist\)$'):
        load_d4rl_data(task, _dims_env(), dataset_path=str(tmp_path / 'nowhere'))
    # metadata.json without the keys Minari asserts on: its AssertionError has no message.
    (tmp_path / 'broken' / 'data').mkdir(parents=True)
    (tmp_path / 'broken' / 'data' / 'metadata.json').write_text('{}')
    with pytest.raises(DatasetError) as error:
        load_d4rl_data(task, _dims_env(), dataset_path=str(tmp_path / 'broken'))
    assert str(error.value) == (
        f"{tmp_path / 'broken'} is not a readable Minari dataset (Minari's reader raised AssertionError, with no "
        'message); check its data/metadata.json and data files'
    )
    empty = write_minari_dataset(tmp_path / 'empty', empty=True)
    with pytest.raises(DatasetError, match='holds no episodes'):
        load_d4rl_data(_task('antmaze-umaze-v2', 'minari'), _dims_env(), dataset_path=str(empty))


@pytest.mark.parametrize('name', D4RL_TASKS)
def test_minari_env_creates_steps_and_succeeds_at_the_goal(name):
    env = make_env(_task(name, 'minari'))
    try:
        observation, _ = env.reset(seed=0)
        assert observation.shape == (29,) and env.action_space.shape == (8,)
        assert env.spec.max_episode_steps == resolve_task(name).family.episode_length
        _, reward, terminated, _, info = env.step(np.zeros(8))
        assert reward == 0.0 and not terminated and not info['success']
        # Put the ant on the goal: the episode ends there, a success (D4RL's evaluation AntMaze does the same).
        ant = env.unwrapped.ant_env
        qpos = ant.data.qpos.copy()
        qpos[:2] = env.unwrapped.goal
        ant.set_state(qpos, ant.data.qvel.copy())
        _, reward, terminated, _, info = env.step(np.zeros(8))
        assert reward == 1.0 and terminated and info['success']
    finally:
        env.close()


# ------------------------------------------------------------------------------------------------
# Backend choice and the CLI


def test_backend_choice():
    task = resolve_task('antmaze-umaze-v2')
    if LEGACY_FAILURE:
        with pytest.raises(ValueError, match='--backend d4rl.*pip install -e ".\\[d4rl\\]".*--backend minari'):
            with_backend(task, 'd4rl')
        assert with_backend(task, None).backend == 'minari'
    else:
        assert with_backend(task, None).backend == 'd4rl'
    with pytest.raises(ValueError, match='D4RL AntMaze tasks only'):
        with_backend(resolve_task('cube-single'), 'minari')


def test_legacy_d4rl_is_the_backend_when_it_imports_else_minari(monkeypatch):
    import envs.factory

    task = resolve_task('antmaze-umaze-v2')
    monkeypatch.setattr(envs.factory, '_import_failure', lambda *modules: None)  # both backends import
    assert with_backend(task, None).backend == 'd4rl'
    assert with_backend(task, 'minari').backend == 'minari'
    legacy_missing = lambda *modules: 'import d4rl failed' if 'd4rl' in modules else None  # noqa: E731
    monkeypatch.setattr(envs.factory, '_import_failure', legacy_missing)
    assert with_backend(task, None).backend == 'minari'


def _launch(script, *args):
    return subprocess.run(
        [sys.executable, f'launch/{script}.py', *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def _tiny_run_args(backend, dataset, run_dir):
    args = ['--env', 'antmaze-umaze-v2', '--backend', backend, '--dataset', str(dataset), '--offline-steps', '60']
    args += ['--eval-every', '60', '--eval-episodes', '1', '--eval-envs', '1', '--updates-per-call', '30']
    return args + ['--agent.hidden_dims=32,32', '--agent.batch_size=8', '--no-progress', '--run-dir', str(run_dir)]


@pytest.mark.slow
def test_minari_backend_runs_end_to_end(minari_root, tmp_path):
    run_dir = tmp_path / 'run'
    result = _launch('offline', *_tiny_run_args('minari', minari_root / 'D4RL/antmaze/umaze-v1', run_dir))
    assert result.returncode == 0, result.stderr
    config = json.loads((run_dir / 'config.json').read_text())
    assert config['backend'] == 'minari' and config['task'] == 'antmaze-umaze-v2'
    assert config['dataset_origin'] == 'minari'  # re-collected data: the tables mark it
    assert config['agent_config']['sigma'] == 0.5 and config['buffer_capacity'] == 5
    final = json.loads((run_dir / 'final.json').read_text())
    assert final['steps'] == 60 and 0 <= final['score'] <= 100
    # Without legacy d4rl, asking for it is one line naming what to install, and nothing is written.
    if LEGACY_FAILURE:
        other = tmp_path / 'legacy'
        legacy = _launch('offline', '--env', 'antmaze-umaze-v2', '--backend', 'd4rl', '--run-dir', str(other))
        assert legacy.returncode == 2 and len(legacy.stderr.strip().splitlines()) == 1
        assert '.[d4rl]' in legacy.stderr and not other.exists()


@pytest.mark.slow
@needs_legacy
def test_legacy_backend_runs_o2o_end_to_end(tmp_path):
    dataset, run_dir = tmp_path / 'antmaze.hdf5', tmp_path / 'run'
    write_d4rl_file(dataset)
    result = _launch('o2o', *_tiny_run_args('d4rl', dataset, run_dir), '--online-steps', '60')
    assert result.returncode == 0, result.stderr
    config = json.loads((run_dir / 'config.json').read_text())
    assert config['backend'] == 'd4rl' and config['task'] == 'antmaze-umaze-v2'
    final = json.loads((run_dir / 'final.json').read_text())
    assert final['steps'] == 120 and 0 <= final['online_score'] <= 100
