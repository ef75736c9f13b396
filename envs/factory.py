"""Environment factories: OGBench singletask envs with the paper's success timing."""

import functools

import gymnasium

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


def make_vector_env(task: Task, num_envs):
    """`num_envs` copies for evaluation, stepped in parallel processes when there is more than one.

    Autoreset is NEXT_STEP: the step after an episode ends resets that copy (its action is ignored).
    """
    mode = gymnasium.vector.AutoresetMode.NEXT_STEP
    fns = [functools.partial(make_env, task)] * num_envs
    if num_envs == 1:
        return gymnasium.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    # 'spawn': forking a process that already runs JAX's threads is unsafe.
    return gymnasium.vector.AsyncVectorEnv(fns, context='spawn', autoreset_mode=mode)
