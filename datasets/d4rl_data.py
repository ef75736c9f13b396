"""D4RL AntMaze data from either backend, processed as the paper's reference code processes it.

- legacy D4RL (`d4rl`, what the paper used): the task's HDF5 file (keys observations, actions, rewards,
  terminals, timeouts), turned into transitions as `d4rl.qlearning_dataset` does it.
- Minari (maintained): the datasets `D4RL/antmaze/<maze>-v1`, re-collected on gymnasium-robotics'
  AntMaze; the D4RL-style 29-dim state is `achieved_goal` (the ant's xy) + `observation`; rewards and
  goal terminals relabelled for the evaluation maze's goal, as D4RL's files are.

Then, for both: an episode ends where `next_observations[i]` differs from `observations[i + 1]`, the
mask is 1 - (the dataset's goal-reaching terminal), and rewards get the task's shift (-1).
"""

import http.client
import os
import socket
import urllib.request

import numpy as np

from datasets.buffer import ACTION_CLIP
from datasets.files import atomic_write
from datasets.ogbench_data import DOWNLOAD_TIMEOUT_S, DatasetError

BACKENDS = ('d4rl', 'minari')
D4RL_URL = 'http://rail.eecs.berkeley.edu/datasets/offline_rl/ant_maze_v2/'
D4RL_FILES = {
    'antmaze-umaze-v2': 'Ant_maze_u-maze_noisy_multistart_False_multigoal_False_sparse_fixed.hdf5',
    'antmaze-umaze-diverse-v2': 'Ant_maze_u-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5',
    'antmaze-medium-play-v2': 'Ant_maze_big-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5',
    'antmaze-medium-diverse-v2': 'Ant_maze_big-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5',
    'antmaze-large-play-v2': 'Ant_maze_hardest-maze_noisy_multistart_True_multigoal_False_sparse_fixed.hdf5',
    'antmaze-large-diverse-v2': 'Ant_maze_hardest-maze_noisy_multistart_True_multigoal_True_sparse_fixed.hdf5',
}
_D4RL_KEYS = ('observations', 'actions', 'rewards', 'terminals', 'timeouts')
MINARI_GOAL_RADIUS = 0.45  # gymnasium-robotics AntMaze: success (and sparse reward 1) within 0.45 of the goal


def minari_id(task):
    """'antmaze-medium-play-v2' -> 'D4RL/antmaze/medium-play-v1'."""
    return f'D4RL/antmaze/{task.name[len("antmaze-") : -len("-v2")]}-v1'


def process(observations, actions, next_observations, rewards, goal_terminals, reward_shift):
    """Transitions as the reference builds them from D4RL AntMaze arrays (float32 dict with TRANSITION_KEYS)."""
    n = len(observations)
    ends = np.ones(n, np.float32)  # the last transition ends an episode
    gap = np.linalg.norm(observations[1:] - next_observations[:-1], axis=-1)
    ends[:-1] = gap > 1e-6
    return dict(
        observations=np.asarray(observations, np.float32),
        actions=np.clip(np.asarray(actions, np.float32), -ACTION_CLIP, ACTION_CLIP),
        next_observations=np.asarray(next_observations, np.float32),
        rewards=np.asarray(rewards, np.float32) + np.float32(reward_shift),
        masks=1.0 - np.asarray(goal_terminals, np.float32),
        terminals=ends,
    )


def qlearning_transitions(raw):
    """`d4rl.qlearning_dataset`: pairs (row i, row i + 1) for i < N - 1, without the rows flagged `timeouts`
    (an episode's last row: its next row starts another episode)."""
    keep = ~np.asarray(raw['timeouts'][:-1], bool)
    pick = lambda k: np.asarray(raw[k][:-1])[keep]  # noqa: E731
    return dict(
        observations=pick('observations'),
        actions=pick('actions'),
        next_observations=np.asarray(raw['observations'][1:])[keep],
        rewards=pick('rewards'),
        goal_terminals=pick('terminals'),
    )


# ---------------------------------------------------------------------------------------------------
# legacy D4RL files


def d4rl_dataset_dir(dataset_dir=None):
    return os.path.expanduser(dataset_dir or os.environ.get('D4RL_DATASET_DIR', '~/.d4rl/datasets'))


def _read_hdf5(path):
    try:
        import h5py
    except ImportError:
        raise DatasetError(f'reading {path} needs h5py: pip install -e ".[d4rl]" (or pip install h5py)') from None
    try:
        with h5py.File(path, 'r') as f:
            missing = [k for k in _D4RL_KEYS if k not in f]
            if missing:
                raise DatasetError(f'{path} lacks key(s) {", ".join(missing)}; is it a D4RL AntMaze file?')
            arrays = {k: f[k][...] for k in _D4RL_KEYS}
    except OSError as e:
        raise DatasetError(f'{path} is not a readable HDF5 file (truncated or corrupt?): {e}') from None
    for k in ('rewards', 'terminals', 'timeouts'):  # some files store these as (N, 1), as d4rl.get_dataset allows
        if arrays[k].ndim == 2 and arrays[k].shape[1] == 1:
            arrays[k] = arrays[k][:, 0]
    rows = {k: len(v) for k, v in arrays.items()}
    if len(set(rows.values())) != 1 or min(rows.values()) < 2:
        raise DatasetError(
            f'{path} is not a D4RL AntMaze file: its arrays need one length (2 rows or more), got {rows}'
        )
    return arrays


def _download_d4rl(url, path):
    """Returns None once `path` is downloaded, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, atomic_write(path) as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except (OSError, http.client.HTTPException) as e:  # timeouts are OSErrors
        return ' '.join(str(e).split()) or type(e).__name__
    return None


def _folders_to_make(directory):
    """The folders `os.makedirs(directory)` would create, deepest first."""
    missing, directory = [], os.path.abspath(directory)
    while not os.path.exists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


def _legacy_raw(task, dataset_path, dataset_dir):
    if dataset_path is not None:
        path = os.path.abspath(os.path.expanduser(dataset_path))
        if not os.path.isfile(path):
            raise DatasetError(f'dataset file {path} does not exist')
        return _read_hdf5(path)
    directory = d4rl_dataset_dir(dataset_dir)
    path = os.path.join(directory, D4RL_FILES[task.name])
    if not os.path.isfile(path):
        made = _folders_to_make(directory)
        os.makedirs(directory, exist_ok=True)
        failure = _download_d4rl(D4RL_URL + D4RL_FILES[task.name], path)
        if failure is not None:
            for folder in made:  # a failed download leaves no empty dataset folders behind
                try:
                    os.rmdir(folder)
                except OSError:  # another process's file is in it by now
                    break
            raise DatasetError(
                f'D4RL file {path} is missing and could not be downloaded ({failure}); on a machine with internet '
                f'fetch {D4RL_URL + D4RL_FILES[task.name]} into {directory} (or set D4RL_DATASET_DIR), '
                'pass --dataset FILE.hdf5, or use --backend minari'
            )
    return _read_hdf5(path)


# ---------------------------------------------------------------------------------------------------
# Minari datasets


def _minari_dataset(task, dataset_path, dataset_dir):
    try:
        import minari
    except ImportError:
        raise DatasetError('the Minari backend needs minari: pip install -e ".[minari]"') from None
    dataset_id = minari_id(task)
    if dataset_path is not None:
        root = os.path.abspath(os.path.expanduser(dataset_path))
    else:
        base = os.path.expanduser(dataset_dir) if dataset_dir else str(minari.storage.get_dataset_path())
        root = os.path.join(base, dataset_id)
    data = os.path.join(root, 'data')
    if not os.path.isdir(data):
        if dataset_path is not None:
            what = 'no data/ directory in it' if os.path.exists(root) else 'it does not exist'
            raise DatasetError(f'--dataset {root} is not a Minari dataset ({what})')
        failure = 'not looked for online: --dataset-dir is set' if dataset_dir else _download_minari(minari, dataset_id)
        if failure is not None:
            raise DatasetError(
                f'Minari dataset {dataset_id} is not at {root} ({failure}); with internet run '
                f'`pip install "minari[hf]" && minari download {dataset_id}` (it saves under $MINARI_DATASETS_PATH '
                'or ~/.minari/datasets; point --dataset-dir at that root), or pass --dataset DIR'
            )
    try:
        dataset = minari.MinariDataset(data)
    except Exception as e:  # noqa: BLE001
        # Minari checks its metadata with bare asserts: an AssertionError without a message.
        reason = ' '.join(str(e).split()) or f"Minari's reader raised {type(e).__name__}, with no message"
        raise DatasetError(
            f'{root} is not a readable Minari dataset ({reason}); check its data/metadata.json and data files'
        ) from None
    if dataset.total_episodes == 0:
        raise DatasetError(f'Minari dataset {root} holds no episodes')
    return dataset


def _download_minari(minari, dataset_id):
    """Returns None once the dataset is in Minari's own directory, else why not."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        minari.download_dataset(dataset_id)
    except Exception as e:  # noqa: BLE001  (hosting errors vary: no network, no minari[hf], ...)
        return f'download failed: {" ".join(str(e).split())[:160]}'
    finally:
        socket.setdefaulttimeout(previous)
    return None


def minari_transitions(dataset, goal_xy):
    """Per episode: states achieved_goal + observation, next state = the following one. Minari's AntMaze
    was collected as a continuing task towards goals drawn per episode (its stored rewards are for those),
    while D4RL's files are relabelled for the one goal of the evaluation maze: so are these. Reward and
    goal-reaching terminal are 1 where the next state's xy is within gymnasium-robotics' success radius
    of `goal_xy`, the goal cell of the env the runs are scored in."""
    parts = {k: [] for k in ('observations', 'actions', 'next_observations', 'rewards', 'goal_terminals')}
    for episode in dataset.iterate_episodes():
        obs = episode.observations
        states = np.concatenate([obs['achieved_goal'], obs['observation']], axis=-1)
        at_goal = np.linalg.norm(obs['achieved_goal'][1:] - goal_xy, axis=-1) <= MINARI_GOAL_RADIUS
        parts['observations'].append(states[:-1])
        parts['next_observations'].append(states[1:])
        parts['actions'].append(episode.actions)
        parts['rewards'].append(at_goal.astype(np.float32))
        parts['goal_terminals'].append(at_goal)
    return {k: np.concatenate(v) for k, v in parts.items()}


# ---------------------------------------------------------------------------------------------------


def load_d4rl_data(task, env, dataset_path=None, dataset_dir=None):
    """Transitions (TRANSITION_KEYS, float32) of a D4RL AntMaze task from `task.backend`'s data."""
    if task.backend == 'd4rl':
        arrays = qlearning_transitions(_legacy_raw(task, dataset_path, dataset_dir))
    else:
        dataset = _minari_dataset(task, dataset_path, dataset_dir)
        goal_xy = np.asarray(env.unwrapped.maze.unique_goal_locations[0])  # the evaluation maze's 'g' cell
        arrays = minari_transitions(dataset, goal_xy)
    data = process(**arrays, reward_shift=task.family.reward_shift)
    expected = env.observation_space.shape[-1], env.action_space.shape[-1]
    found = data['observations'].shape[-1], data['actions'].shape[-1]
    if found != expected:
        raise DatasetError(
            f'{task.name} data has (observation, action) dims {found} but the {task.backend} env expects {expected}'
        )
    return data
