"""What a sweep runs: every (agent, task, seed) of a suite as a run with its directory, the runs grouped
into jobs (one CLI process each), the settings each job passes through, the datasets to generate before
the jobs start, and the GPU-hour estimate. launch/sweep.py runs the jobs."""

import dataclasses
import os

from datasets import generate
from datasets.ogbench_data import EPISODE_LENGTH
from envs.registry import FAMILIES, SUITES, UnknownTaskError, resolve_task
from launch import loop
from launch.command_line import UserError
from launch.run_logs import STOPPED_NAME, read_json
from launch.run_plan import seed_list
from launch.settings import agent_config, parse_args, validate_args

SUITE_NAMES = {'offline56': 'offline', 'o2o30': 'o2o'}
GROUPINGS = ('seeds', 'family', 'none')
# FAV's rates on one NVIDIA H100 with paper-sized networks, summed over R runs stacked in one group
# (README, "Speed"; launch/bench.py): offline updates/s, and O2O env steps/s with one update each (env
# and host work included; the means of five measurements of 2026-11-27, docs/speed.md). A group of R
# runs is estimated at the rate of the largest measured R' <= R.
# Used only for the GPU-hour estimate the sweep prints.
H100_OFFLINE_UPDATES_PER_S = {1: 1062, 4: 1980, 8: 2279, 40: 2484}
H100_O2O_ENV_STEPS_PER_S = {1: 120, 8: 745}
# Settings whose value is a path (made absolute for the jobs).
PATH_SETTINGS = ('--dataset', '--dataset-dir')
# Settings the sweep sets per run itself, each with what the sweep takes instead (its own --agent is its parser's).
OWN_SETTINGS = {
    '--env': 'tasks: --suite cube-single',
    '--task': 'tasks: --suite cube-single',
    '--seed': 'seeds: --seeds 0-7',
    '--run-dir': 'run directories: --runs-dir runs',
    '--resume': 'a rerun of the sweep resumes its runs',
    '--list-tasks': "a suite's tasks: launch/offline.py --list-tasks offline",
}


@dataclasses.dataclass(frozen=True)
class Run:
    mode: str
    task: str
    agent: str
    seed: int
    run_dir: str

    @property
    def finished(self):
        return os.path.exists(os.path.join(self.run_dir, 'final.json'))

    @property
    def stopped(self):
        """Stopped on non-finite values (launch/run_logs.py's STOPPED_NAME, written by launch/loop.py): not
        rerun until that file is deleted."""
        return not self.finished and os.path.exists(os.path.join(self.run_dir, STOPPED_NAME))


@dataclasses.dataclass(frozen=True)
class Job:
    """Runs of one agent trained by one process, as one stacked group: one run, the seeds of a task, or
    the seeds of a family's 5 tasks (`make_jobs` forms them)."""

    runs: tuple
    settings: tuple  # run settings passed through to the CLI
    runs_dir: str

    @property
    def name(self):
        """The job's runs, relative to the runs directory: mode/task/agent/seed<s>, or for a group
        mode/<task or family>/agent/seeds<seeds>."""
        run = self.runs[0]
        if len(self.runs) == 1:
            return os.path.relpath(run.run_dir, self.runs_dir)
        return os.path.join(run.mode, self._env(), run.agent, f'seeds{format_seeds(self._seeds())}')

    @property
    def finished(self):
        """Nothing left to train: every run finished or stopped."""
        return all(r.finished or r.stopped for r in self.runs)

    @property
    def unfinished(self):
        return sum(not (r.finished or r.stopped) for r in self.runs)

    def _env(self):
        tasks = {r.task for r in self.runs}
        return self.runs[0].task if len(tasks) == 1 else resolve_task(self.runs[0].task).family.short_name

    def _seeds(self):
        return sorted({r.seed for r in self.runs})

    def arguments(self):
        """The CLI's arguments after `python`. A group's finished runs are skipped by the CLI itself."""
        run = self.runs[0]
        if len(self.runs) == 1:
            own = ['--env', run.task, '--agent', run.agent, '--seed', str(run.seed), '--run-dir', run.run_dir]
        else:
            env = ['--env', self._env()] + ([] if self._env() == run.task else ['--task', 'all'])
            own = [*env, '--agent', run.agent, '--seeds', format_seeds(self._seeds()), '--runs-dir', self.runs_dir]
        return [f'launch/{run.mode}.py', *own, '--no-progress', *self.settings]


def make_jobs(runs, settings, group, runs_dir):
    """The single place where runs are grouped into jobs, per agent: each run alone (`none`), the seeds
    of a task (`seeds`), or the seeds of a family's 5 tasks where the suite has all 5 (`family`; its
    other tasks by `seeds`)."""
    suite_tasks_of = {}
    for run in runs:
        suite_tasks_of.setdefault(resolve_task(run.task).family.name, set()).add(run.task)

    def key(run):
        if group == 'none':
            return run.run_dir
        family = resolve_task(run.task).family
        whole_family = len(family.task_names()) > 1 and suite_tasks_of[family.name] == set(family.task_names())
        return (family.name if group == 'family' and whole_family else run.task, run.agent)

    jobs = {}
    for run in runs:
        jobs.setdefault(key(run), []).append(run)
    return [Job(tuple(rs), _settings_for(rs[0].task, rs[0].agent, settings), runs_dir) for rs in jobs.values()]


def _agent_settings(agent, settings):
    """The passed-through settings of `agent`'s jobs: all of them, but --offline-steps not to RLPD, which has no
    offline phase (its CLI refuses the setting), so that one O2O sweep compares RLPD with agents whose offline
    phase it shortens."""
    if agent != 'rlpd':
        return list(settings)
    kept, items = [], iter(settings)
    for item in items:
        if item == '--offline-steps':
            next(items, None)  # its value
        elif not item.startswith('--offline-steps='):
            kept.append(item)
    return kept


def _settings_for(task, agent, settings):
    """The passed-through settings a job of `agent` on `task` gets (`_agent_settings`). --backend (the D4RL
    AntMaze tasks' data and envs) only reaches D4RL tasks, so that `--suite offline56 --backend minari` leaves
    the OGBench tasks alone. Paths are made absolute: jobs run in the repository, not in the directory the
    sweep was started from."""
    d4rl = resolve_task(task).family.source == 'd4rl'
    kept, items, i = [], _agent_settings(agent, settings), 0
    while i < len(items):
        name, equals, value = items[i].partition('=')
        separate = not equals and name in ('--backend', *PATH_SETTINGS) and i + 1 < len(items)  # '--flag value'
        value = items[i + 1] if separate else value
        i += 2 if separate else 1
        if name == '--backend' and not d4rl:
            continue
        if name in PATH_SETTINGS:
            value = os.path.abspath(os.path.expanduser(value))
        kept += [name, value] if separate else [f'{name}={value}' if equals else name]
    return tuple(kept)


def format_seeds(seeds):
    """Sorted seeds → '0-7' when consecutive, else '0,3,5' (as --seeds reads them)."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f'{seeds[0]}-{seeds[-1]}'
    return ','.join(map(str, seeds))


def expand_suite(suite):
    """Task names of a suite (offline56, o2o30), an environment (cube-single) or one task; several
    separated by commas."""
    if ',' in suite:
        return list(dict.fromkeys(t for part in suite.split(',') for t in expand_suite(part.strip())))
    if suite in SUITE_NAMES:
        return list(SUITES[SUITE_NAMES[suite]])
    for family in FAMILIES.values():
        if suite in (family.name, family.short_name):
            return family.task_names()
    try:
        return [resolve_task(suite).name]  # a full task name, or a one-line error naming close ones
    except UnknownTaskError as e:
        raise UnknownTaskError(f'{e} (or a suite: {", ".join(SUITE_NAMES)})') from None


def plan(args, settings):
    suites = {part.strip() for part in args.suite.split(',')} & set(SUITE_NAMES)
    if len(suites) > 1:
        raise UserError(
            f'--suite {args.suite}: offline56 and o2o30 are swept in different modes; sweep them one at a time'
        )
    mode = args.mode or ('o2o' if suites == {'o2o30'} else 'offline')
    args.agent = list(dict.fromkeys(args.agent or ['fav']))  # an agent given twice is swept once
    if mode == 'offline' and 'rlpd' in args.agent:
        raise UserError('--agent rlpd trains online from scratch: sweep it in O2O mode (--suite o2o30 or --mode o2o)')
    runs_dir = os.path.abspath(args.runs_dir)
    runs = [
        Run(mode, task, agent, seed, os.path.join(runs_dir, mode, task, agent, f'seed{seed}'))
        for task in expand_suite(args.suite)
        for agent in args.agent
        for seed in sorted(seed_list(args.seeds))
    ]
    return mode, runs, make_jobs(runs, settings, args.group, runs_dir)


def parse_passed_settings(mode, passed, runs):
    """Checks the passed-through settings with the CLI's own parser, for every agent of the sweep;
    returns {agent: its parsed settings}."""
    for item in passed:
        name = item.split('=', 1)[0]
        if name in OWN_SETTINGS:
            raise UserError(f'{name} is set by the sweep per run; drop it ({OWN_SETTINGS[name]})')
    agents = dict.fromkeys(run.agent for run in runs)
    task = runs[0].task
    if any(item.split('=', 1)[0] == '--backend' for item in passed):  # checked on a task it reaches: D4RL's
        task = next((r.task for r in runs if resolve_task(r.task).family.source == 'd4rl'), task)
    parsed = {
        agent: parse_args([*_agent_settings(agent, passed), '--env', task, '--agent', agent], mode) for agent in agents
    }
    families = dict.fromkeys(resolve_task(run.task).family for run in runs)
    for settings in parsed.values():  # the CLI's checks, once here rather than failing in every job
        validate_args(settings, mode)
        for family in families:
            agent_config(settings, mode, family)
    return parsed


def check_started_runs(mode, jobs):
    """Checks every run directory of the jobs that already holds a run, finished ones included (which the
    sweep skips), against the settings its job passes, with the CLI's own check: a sweep rerun with other
    settings is refused in one line rather than counting the runs of the old settings as done. A finished
    or stopped run's final.json or stopped.json is read as the CLI reads it: a damaged one is refused in
    one line (RunFileError), not counted as done."""
    for job in jobs:
        for run in job.runs:
            if run.finished or run.stopped:
                read_json(os.path.join(run.run_dir, 'final.json' if run.finished else STOPPED_NAME))
        if any(os.path.exists(os.path.join(r.run_dir, 'config.json')) for r in job.runs):
            loop.plan(parse_args(job.arguments()[1:], mode), mode)


def _group_rate(rates, runs):
    return rates[max(r for r in rates if r <= runs)]


def gpu_hours(mode, cli, runs):
    """Estimated GPU-hours of `runs` runs trained as one group, at FAV's measured H100 rates."""
    seconds = runs * cli.offline_steps / _group_rate(H100_OFFLINE_UPDATES_PER_S, runs)
    if mode == 'o2o':
        seconds += runs * cli.online_steps / _group_rate(H100_O2O_ENV_STEPS_PER_S, runs)
    return seconds / 3600


def data_preparations(runs, cli):
    """`python -m datasets.generate` commands for a --dataset-episodes dataset not yet generated, one per
    environment: run before its jobs so that parallel runs do not generate the same files at once."""
    if cli.dataset_episodes is None or cli.dataset is not None:
        return {}
    out = {}
    for family in dict.fromkeys(resolve_task(r.task).family for r in runs):
        # Absolute: the command runs in the repository, not where the sweep was started.
        dataset_dir = os.path.abspath(os.path.expanduser(cli.dataset_dir or generate.DEFAULT_DATASET_DIR))
        directory = generate.generated_dir(dataset_dir, cli.dataset_episodes, 0, EPISODE_LENGTH)
        train, val = generate.output_paths(family, directory)
        if family.generatable and not (train.exists() and val.exists()):
            command = ['-m', 'datasets.generate', '--env', family.name, '--episodes', str(cli.dataset_episodes)]
            out[family.name] = [*command, '--out', str(directory), '--episode-length', str(EPISODE_LENGTH)]
    return out
