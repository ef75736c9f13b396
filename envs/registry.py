"""Every task of the paper's benchmark by name, with its per-environment defaults.

The numbers are the paper's settings (docs/algorithm.md, 'Per-environment settings'). A task is one OGBench singletask
variant (`<env>-singletask-task<k>-v0`) or one D4RL AntMaze dataset.
"""

import dataclasses
import difflib


@dataclasses.dataclass(frozen=True)
class Family:
    """An environment (5 OGBench tasks, or one D4RL task) and its agent defaults."""

    name: str  # OGBench dataset-style name, e.g. 'cube-double-play', or the D4RL name.
    source: str  # 'ogbench' or 'd4rl'
    sigma: float  # FAV kernel bandwidth
    beta: float  # FAV inverse temperature
    adaptive_beta: float  # FAV-Adaptive inverse temperature
    episode_length: int  # OGBench's registrations set their own (a test checks they agree); Minari AntMaze's
    # envs are made with it as max_episode_steps (legacy D4RL's TimeLimit matches it)
    discount: float = 0.99
    q_agg: str = 'mean'
    reward_shift: float = 0.0  # added to every dataset and online reward
    default_task: int = 1  # OGBench's default singletask id
    o2o: bool = False  # part of the 30-task O2O suite
    generatable: bool = False  # play data can be regenerated with OGBench's plan oracles

    @property
    def short_name(self):
        """'cube-double' for 'cube-double-play', 'antmaze-large' for 'antmaze-large-navigate'."""
        for suffix in ('-play', '-navigate'):
            if self.name.endswith(suffix):
                return self.name[: -len(suffix)]
        return self.name

    @property
    def env_name(self):
        """Gymnasium id of the goal-conditioned env (used for data collection), e.g. 'cube-double-v0'."""
        return f'{self.short_name}-v0'

    def task_names(self):
        if self.source == 'd4rl':
            return [self.name]
        return [f'{self.name}-singletask-task{k}-v0' for k in range(1, 6)]


@dataclasses.dataclass(frozen=True)
class Task:
    name: str  # full name, e.g. 'cube-double-play-singletask-task2-v0'
    family: Family
    task_id: int | None  # 1..5 for OGBench, None for D4RL
    backend: str | None = None  # D4RL AntMaze only: 'd4rl' (legacy package) or 'minari'

    @property
    def env_id(self):
        """Gymnasium id of the singletask env, e.g. 'cube-double-singletask-task2-v0'."""
        if self.family.source == 'd4rl':
            return self.name
        return f'{self.family.short_name}-singletask-task{self.task_id}-v0'

    @property
    def dataset_name(self):
        """OGBench dataset file stem, e.g. 'cube-double-play-v0'."""
        if self.family.source == 'd4rl':
            return self.name
        return f'{self.family.name}-v0'


_OG = 'ogbench'
FAMILIES = {
    f.name: f
    for f in [
        Family('antmaze-large-navigate', _OG, 0.5, 2.0, 1.0, 1000, q_agg='min'),
        Family('antmaze-giant-navigate', _OG, 0.5, 1.0, 1.0, 1000, discount=0.995, q_agg='min', o2o=True),
        Family('humanoidmaze-medium-navigate', _OG, 0.5, 1.0, 2.0, 2000, discount=0.995),
        Family('humanoidmaze-large-navigate', _OG, 0.5, 1.0, 2.0, 2000, discount=0.995, o2o=True),
        Family('antsoccer-arena-navigate', _OG, 1.0, 1.0, 2.0, 1000, discount=0.995, default_task=4, o2o=True),
        Family('cube-single-play', _OG, 0.05, 1.0, 0.5, 200, default_task=2, generatable=True),
        Family('cube-double-play', _OG, 0.1, 0.5, 0.5, 500, default_task=2, o2o=True, generatable=True),
        Family('scene-play', _OG, 0.1, 0.5, 0.5, 750, default_task=2, o2o=True, generatable=True),
        Family('puzzle-3x3-play', _OG, 0.5, 0.5, 2.0, 500, default_task=4, generatable=True),
        Family('puzzle-4x4-play', _OG, 1.0, 0.5, 0.1, 500, default_task=4, o2o=True, generatable=True),
        Family('antmaze-umaze-v2', 'd4rl', 0.5, 1.0, 3.0, 700, reward_shift=-1.0),
        Family('antmaze-umaze-diverse-v2', 'd4rl', 1.0, 1.0, 3.0, 700, reward_shift=-1.0),
        Family('antmaze-medium-play-v2', 'd4rl', 1.0, 3.0, 2.0, 1000, reward_shift=-1.0),
        Family('antmaze-medium-diverse-v2', 'd4rl', 1.0, 3.0, 3.0, 1000, reward_shift=-1.0),
        Family('antmaze-large-play-v2', 'd4rl', 1.0, 3.0, 5.0, 1000, reward_shift=-1.0),
        Family('antmaze-large-diverse-v2', 'd4rl', 1.0, 3.0, 5.0, 1000, reward_shift=-1.0),
    ]
}

SUITES = {
    'offline': [n for f in FAMILIES.values() for n in f.task_names()],
    'o2o': [n for f in FAMILIES.values() if f.o2o for n in f.task_names()],
}


class UnknownTaskError(ValueError):
    pass


def _task_from_full_name(name):
    for family in FAMILIES.values():
        names = family.task_names()
        if name in names:
            return Task(name, family, None if family.source == 'd4rl' else names.index(name) + 1)
    return None


def _family_from_name(name):
    for family in FAMILIES.values():
        if name in (family.name, family.short_name, f'{family.name}-singletask-v0'):
            return family
    return None


def _all_accepted_names():
    names = list(SUITES['offline'])
    for family in FAMILIES.values():
        names += [family.name, family.short_name]
    return sorted(set(names))


def resolve_task(env, task=None):
    """Turns `--env` (full task name, family, or short family name) and `--task` into a Task."""
    full = _task_from_full_name(env)
    if full is not None:
        if task is not None and task != (full.task_id or 1):  # a D4RL task is its family's one task, task 1
            named = 'a single task' if full.task_id is None else f'task {full.task_id}'
            raise UnknownTaskError(f'--env {env} already names {named}; drop --task {task}')
        return full
    family = _family_from_name(env)
    if family is None:
        close = difflib.get_close_matches(env, _all_accepted_names(), n=5, cutoff=0.4)
        hint = ', '.join(close) if close else ', '.join(f.short_name for f in FAMILIES.values())
        raise UnknownTaskError(f"unknown environment '{env}'; closest valid names: {hint}")
    if family.source == 'd4rl':
        if task not in (None, 1):
            raise UnknownTaskError(f'{family.name} has a single task; drop --task {task}')
        return Task(family.name, family, None)
    if env == f'{family.name}-singletask-v0' and task not in (None, family.default_task):
        raise UnknownTaskError(
            f"--env {env} is OGBench's name of task {family.default_task}; drop --task {task}, or give --env "
            f'{family.short_name} --task {task}'
        )
    task_id = family.default_task if task is None else task
    if not 1 <= task_id <= 5:
        raise UnknownTaskError(f'--task must be 1..5 for {family.name}, got {task_id}')
    return Task(f'{family.name}-singletask-task{task_id}-v0', family, task_id)


def suite_tasks(suite):
    if suite not in SUITES:
        raise UnknownTaskError(f"unknown suite '{suite}'; valid suites: {', '.join(SUITES)}")
    return list(SUITES[suite])
