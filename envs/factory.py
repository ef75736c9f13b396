"""Environment factories: OGBench singletask envs with the paper's success timing, and D4RL AntMaze
envs from legacy D4RL or from gymnasium-robotics (the Minari backend)."""

import contextlib
import dataclasses
import functools
import importlib
import io
import os
import tempfile
import warnings

import gymnasium
import numpy as np

from envs.pool import EnvPool
from envs.registry import Task

# ogbench >= 1.2 computes singletask success/termination/reward before the step ('pre');
# the paper used ogbench 1.1.0, which computed them after it. Runs pin 'post' to be comparable.
SUCCESS_TIMING = 'post'


class OwnGlobalRandom(gymnasium.Wrapper):
    """Gives the env a NumPy global generator of its own at reset. OGBench's mazes draw each episode's
    start and goal noise from `np.random`, and D4RL's v2 AntMaze its goal, not from the env's seeded
    generator: this copy's generator (re-seeded by `reset(seed=...)`) stands in for the global one while
    the env resets, so a copy's episodes depend only on its seed and actions, whatever else shares the
    process, and the global generator outside is left as it was. Steps are not wrapped: the suite's envs
    draw nothing from `np.random` there (OGBench does only in its teleport mazes), and a swap costs about
    0.2 ms, a tenth of a MuJoCo step."""

    def __init__(self, env):
        super().__init__(env)
        self.global_rng = np.random.RandomState()

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.global_rng = np.random.RandomState(seed)
        outside = np.random.get_state()
        np.random.set_state(self.global_rng.get_state())
        try:
            return self.env.reset(seed=seed, options=options)
        finally:
            self.global_rng.set_state(np.random.get_state())
            np.random.set_state(outside)


@contextlib.contextmanager
def _maze_files_removed():
    """OGBench's locomotion mazes and gymnasium-robotics' AntMaze (1.4) write each maze's MuJoCo XML into the temp
    folder as the env is made, and never remove it: a file in /tmp per env made (thousands in a sweep). While an env
    is made (and loads its file), the temp folder is one of ours, removed after."""
    with tempfile.TemporaryDirectory() as scratch:
        saved, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield
        finally:
            tempfile.tempdir = saved


def make_env(task: Task):
    """Creates the evaluation / online-interaction env of a task, wrapped in gymnasium's RecordEpisodeStatistics
    (the episode's return and length at its last step)."""
    with _maze_files_removed():
        if task.family.source == 'd4rl':
            env = _legacy_d4rl_env(task) if task.backend == 'd4rl' else _minari_antmaze_env(task)
        else:
            import ogbench  # noqa: F401  (registers the OGBench gymnasium ids)

            env = gymnasium.make(task.env_id, success_timing=SUCCESS_TIMING)
    return gymnasium.wrappers.RecordEpisodeStatistics(OwnGlobalRandom(env))


def make_env_pool(tasks):
    """One env copy per entry of `tasks`, stepped in parallel processes (as many as cores) when there
    is more than one copy, in this process otherwise."""
    workers = 0 if len(tasks) == 1 else min(len(tasks), os.cpu_count() or 1)
    return EnvPool([functools.partial(make_env, task) for task in tasks], workers)


# ---------------------------------------------------------------------------------------------------
# D4RL AntMaze

LEGACY_INSTALL = (
    'legacy D4RL needs Python 3.10 and `pip install -e ".[d4rl]"` (mujoco-py and MuJoCo 2.1, see the README)'
)
MINARI_INSTALL = 'the Minari backend needs `pip install -e ".[minari]"`'


def _import_failure(*modules):
    """None if every module imports, else a one-line reason (legacy d4rl can fail deep inside mujoco-py)."""
    for name in modules:
        try:
            # Quietly: gymnasium-robotics prints a notice to stderr on import, d4rl lists its missing suites.
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            return f'import {name} failed ({type(e).__name__}: {" ".join(str(e).split())[:120]})'
    return None


def with_backend(task, requested):
    """`task` with its D4RL AntMaze backend: `requested`, else legacy D4RL when it imports, else Minari
    (with a one-line notice). Raises ValueError with a one-line message when that backend is missing."""
    if task.family.source != 'd4rl':
        if requested is not None:
            raise ValueError(f'--backend applies to the D4RL AntMaze tasks only, not to {task.name}')
        return task
    legacy_failure = _import_failure('gym', 'd4rl') if requested in (None, 'd4rl') else None
    if requested == 'd4rl' and legacy_failure:
        raise ValueError(f'--backend d4rl: {legacy_failure}; {LEGACY_INSTALL}, or use --backend minari')
    backend = requested or ('minari' if legacy_failure else 'd4rl')
    if backend == 'minari':
        minari_failure = _import_failure('minari', 'gymnasium_robotics')
        if minari_failure:
            raise ValueError(f'{task.name}: {minari_failure}; {MINARI_INSTALL}, or {LEGACY_INSTALL}')
        if requested is None:
            print(f'{task.name}: legacy d4rl is not importable, using the Minari backend (its data was re-collected)')
    return dataclasses.replace(task, backend=backend)


class _GymToGymnasium(gymnasium.Env):
    """A legacy D4RL env (gym 0.23 API) behind the gymnasium API. D4RL's evaluation AntMaze gives
    reward 1 and ends the episode where the ant reaches the goal: that is the success flag."""

    def __init__(self, env):
        self.env = env
        box = lambda space: gymnasium.spaces.Box(space.low, space.high, space.shape, np.float32)  # noqa: E731
        self.observation_space, self.action_space = box(env.observation_space), box(env.action_space)

    def reset(self, *, seed=None, options=None):
        # gym 0.23 envs take their seed through seed() (deprecated there, hence the quiet), and only the ant
        # inside D4RL's NormalizedBoxEnv draws its start pose (its goal: see OwnGlobalRandom). D4RL prints
        # each goal it draws.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore', DeprecationWarning)
            if seed is not None:
                inner = self.env.unwrapped
                getattr(inner, 'wrapped_env', inner).seed(seed)
            observation = self.env.reset()
        return np.asarray(observation, np.float32), {}

    def step(self, action):
        observation, reward, done, info = self.env.step(action)
        truncated = bool(info.get('TimeLimit.truncated', False))  # gym's TimeLimit (700 or 1000 steps)
        info = dict(info, success=float(reward > 0))
        return np.asarray(observation, np.float32), reward, done and not truncated, truncated, info


def _legacy_d4rl_env(task):
    import d4rl  # noqa: F401  (registers the D4RL gym ids)
    import gym

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # D4RL prints the goal it draws
        warnings.filterwarnings('ignore', message='.*Box bound precision lowered')  # its float64 bounds
        return _GymToGymnasium(gym.make(task.name))


# Minari's evaluation mazes for its D4RL AntMaze datasets ('r': the fixed start cell, 'g': the goal
# cell), on the gymnasium-robotics env each dataset was collected in. Minari's own umaze evaluation map
# is the data's maze turned 180° (Farama-Foundation/Minari#304): here it has the data's walls (those of
# gymnasium-robotics' U_MAZE) with the start and goal cells turned with it.
_R, _G = 'r', 'g'
MINARI_MAZES = {
    'umaze': [[1, 1, 1, 1, 1], [1, _G, 0, 0, 1], [1, 1, 1, 0, 1], [1, _R, 0, 0, 1], [1, 1, 1, 1, 1]],
    'medium': [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, _R, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, _G, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    'large': [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, _R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, _G, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}
MINARI_ENV_IDS = {
    'antmaze-umaze-v2': 'AntMaze_UMaze-v4',
    'antmaze-umaze-diverse-v2': 'AntMaze_UMaze-v4',
    'antmaze-medium-play-v2': 'AntMaze_Medium-v4',
    'antmaze-medium-diverse-v2': 'AntMaze_Medium_Diverse_GR-v4',
    'antmaze-large-play-v2': 'AntMaze_Large-v4',
    'antmaze-large-diverse-v2': 'AntMaze_Large_Diverse_GR-v4',
}


class D4RLState(gymnasium.ObservationWrapper):
    """gymnasium-robotics' dict observation as D4RL's 29-dim state: the ant's xy (`achieved_goal`) + the rest."""

    def __init__(self, env):
        super().__init__(env)
        size = sum(env.observation_space[k].shape[0] for k in ('achieved_goal', 'observation'))
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (size,), np.float64)

    def observation(self, observation):
        return np.concatenate([observation['achieved_goal'], observation['observation']])


def _minari_antmaze_env(task):
    with warnings.catch_warnings():  # gymnasium-robotics warns about Adroit rewards and AntMaze v5 on import / make
        warnings.simplefilter('ignore')
        import gymnasium_robotics

        gymnasium.register_envs(gymnasium_robotics)
        maze = task.name.split('-')[1]  # umaze, medium, large
        # Ends at the goal (continuing_task=False), as D4RL's evaluation AntMaze does; info['success'] is set.
        env = gymnasium.make(
            MINARI_ENV_IDS[task.name],
            maze_map=MINARI_MAZES[maze],
            continuing_task=False,
            reset_target=False,
            max_episode_steps=task.family.episode_length,
        )
    return D4RLState(env)
