"""Environment factories: OGBench singletask envs with the paper's success timing."""

import functools
import os

import gymnasium

from envs.pool import EnvPool
from envs.registry import Task

# ogbench >= 1.2 computes singletask success/termination/reward before the step ('pre');
# the paper used ogbench 1.1.0, which computed them after it. Runs pin 'post' to be comparable.
SUCCESS_TIMING = 'post'


class EpisodeMonitor(gymnasium.wrappers.RecordEpisodeStatistics):
    """Gymnasium's episode statistics (return, length, time) plus the final step's success flag."""

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        if 'episode' in info:
            info['episode']['success'] = float(info.get('success', 0.0))
        return observation, reward, terminated, truncated, info


def make_env(task: Task):
    """Creates the evaluation / online-interaction env of a task, wrapped in an EpisodeMonitor."""
    if task.family.source != 'ogbench':
        raise NotImplementedError(
            f'{task.name}: D4RL AntMaze environments are not wired up yet; OGBench tasks are: '
            'see `launch/offline.py --list-tasks offline`'
        )
    import ogbench  # noqa: F401  (registers the OGBench gymnasium ids)

    env = gymnasium.make(task.env_id, success_timing=SUCCESS_TIMING)
    return EpisodeMonitor(env)


def make_env_pool(tasks):
    """One env copy per entry of `tasks`, stepped in parallel processes (as many as cores) when there
    is more than one copy, in this process otherwise."""
    workers = 0 if len(tasks) == 1 else min(len(tasks), os.cpu_count() or 1)
    return EnvPool([functools.partial(make_env, task) for task in tasks], workers)
