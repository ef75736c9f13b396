"""The runs a command trains and where: `--env`/`--task` and `--seed(s)` resolved into a group's runs, each
run's directory and the settings its `config.json` records, and the checks that an existing run directory may be
gone on with (the same settings) before anything is written. `launch/settings.py` reads the command line;
`launch/loop.py` trains the runs.
"""

import dataclasses
import functools
import os
import pathlib
import re
import resource
import subprocess
from importlib import metadata
from typing import Any

from datasets.files import nearest_existing
from envs.factory import SUCCESS_TIMING
from envs.registry import resolve_task
from launch.checkpoint import CHECKPOINT_NAME
from launch.command_line import UserError
from launch.run_lock import SHARED_OPEN_FILES, room_for_runs
from launch.run_logs import STOPPED_NAME, read_json

# Settings that may change between a run and its resumption without changing the result.
RESUMABLE_DIFFERENCES = ('resume', 'wandb', 'progress', 'workers', 'max_eval_envs', 'code_version')
# Settings known once the data is loaded (config.json records the resolved values).
RESOLVED_WITH_THE_DATA = ('buffer_capacity', 'dataset_origin')

SEED_LIMIT = 2**32  # seeds are 32-bit, as numpy's and gymnasium's are
# Far above any group a device holds (each run is an agent and a ring on it) or a sweep's seeds per task.
SEEDS_PER_COMMAND = 100_000


def parse_seeds(args):
    """`--seed S` or `--seeds 0-7` / `--seeds 0,3,5` → the list of seeds (default [0])."""
    if args.seeds is None:
        if args.seed is not None and not 0 <= args.seed < SEED_LIMIT:
            raise UserError(f'--seed must be >= 0 and < {SEED_LIMIT}, got {args.seed}')
        return [0 if args.seed is None else args.seed]
    if args.seed is not None:
        raise UserError('give --seed or --seeds, not both')
    return seed_list(args.seeds)


def seed_list(text):
    """`--seeds` text ('0-7', '0,3,5', '3') → its seeds in order (the CLIs' and the sweep's reading)."""
    ranges = []
    for part in text.split(','):
        match = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', part)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UserError(f'--seeds {text}: expected seeds like 0-7 or 0,3,5 (non-negative, ranges low-high)')
        low, high = int(match[1]), int(match[2] or match[1])
        if high >= SEED_LIMIT:
            raise UserError(f'--seeds {text}: seeds must be < {SEED_LIMIT}')
        ranges.append(range(low, high + 1))
    count = sum(map(len, ranges))  # before the list is made: 0-4294967295 is 4e9 seeds
    if count > SEEDS_PER_COMMAND:
        raise UserError(f'--seeds {text} names {count} seeds; one command takes at most {SEEDS_PER_COMMAND}')
    seeds = [seed for seeds_of_range in ranges for seed in seeds_of_range]
    if len(set(seeds)) != len(seeds):
        raise UserError(f'--seeds {text} names a seed twice')
    return seeds


def resolve_tasks(args):
    """`--env` and `--task` (an id, or 'all' for the 5 tasks of a family) → the list of tasks."""
    if args.task is None or args.task.strip() != 'all':
        try:
            task_id = None if args.task is None else int(args.task)
        except ValueError:
            raise UserError(f"--task {args.task}: expected a task id 1..5 or 'all'") from None
        return [resolve_task(args.env, task_id)]
    first = resolve_task(args.env)
    if first.family.source != 'ogbench' or args.env == first.name:
        raise UserError(f'--task all needs an OGBench family for --env (e.g. cube-double), not {args.env}')
    return [resolve_task(first.family.name, k) for k in range(1, 6)]


def run_settings(args, task, seed, config, mode):
    return dict(
        mode=mode,
        task=task.name,
        agent=args.agent,
        seed=seed,
        offline_steps=args.offline_steps,
        online_steps=args.online_steps,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        eval_envs=min(args.eval_envs, args.eval_episodes),
        max_eval_envs=args.max_eval_envs,
        log_every=args.log_every,
        save_every=args.save_every,
        updates_per_call=args.updates_per_call,
        online_updates_per_call=args.online_updates_per_call,
        balanced_sampling=args.balanced_sampling,
        buffer_capacity=args.buffer_capacity,  # replaced by the rows it resolves to once the data is loaded
        dataset_origin=None,  # set once the data is loaded: official, regenerated, generated, given or minari
        backend=task.backend,
        dataset=args.dataset,
        dataset_dir=args.dataset_dir,
        dataset_episodes=args.dataset_episodes,
        workers=args.workers,
        resume=args.resume,
        wandb=args.wandb,
        progress=args.progress,
        success_timing=SUCCESS_TIMING,
        ogbench_version=ogbench_version(),
        code_version=code_version(),
        agent_config=dataclasses.asdict(config),
    )


def keeps_progress(run_dir):
    """Whether a rerun into run_dir would go on from (or count) what it holds: a checkpoint, final.json or
    stopped.json. A config.json alone (a start that failed before its first checkpoint, e.g. out of memory in
    its first update) keeps nothing: the rerun starts it from step 0, so it may take other settings."""
    return any(os.path.exists(os.path.join(run_dir, name)) for name in (CHECKPOINT_NAME, 'final.json', STOPPED_NAME))


def check_same_run(run_dir, settings):
    saved = read_json(os.path.join(run_dir, 'config.json'))
    if saved.get('dataset_origin') not in (None, settings.get('dataset_origin')) and settings.get('dataset_origin'):
        raise UserError(
            f'{run_dir} was trained on {saved["dataset_origin"]} data, but this time the data is '
            f'{settings["dataset_origin"]}; pass another --run-dir, or make its {saved["dataset_origin"]} data the '
            'one found again to resume it'
        )
    differences = _differences(saved, settings)
    if differences:  # all of them: one may follow from another (eval_envs from eval_episodes)
        raise UserError(
            f'{run_dir} holds a run with other settings: {", ".join(differences)}; '
            'pass another --run-dir or --runs-dir (or the same settings to resume it)'
        )


def _differences(saved, settings):
    """`key=SAVED (now NEW)` for each setting that differs from the `saved` config.json, in key order."""
    saved, settings, differences = _by_field(saved), _by_field(settings), []
    for key in sorted(set(saved) | set(settings)):
        resolved_later = key in RESOLVED_WITH_THE_DATA and (settings.get(key) is None or key not in saved)
        if key in RESUMABLE_DIFFERENCES or resolved_later:
            continue  # checked again once the data is loaded (older runs did not record the data's origin)
        if saved.get(key) != jsonable(settings.get(key)):
            differences.append(f'{key}={saved.get(key)!r} (now {jsonable(settings.get(key))!r})')
    return differences


def _by_field(settings):
    """The settings with agent_config's fields as agent.FIELD entries: a difference names its field, not the
    whole config."""
    agent = settings.get('agent_config')
    if not isinstance(agent, dict):  # none (a test's settings), or a damaged config.json: compared whole
        return settings
    return {**{k: v for k, v in settings.items() if k != 'agent_config'}, **{f'agent.{k}': v for k, v in agent.items()}}


def jsonable(value):
    return (
        [jsonable(v) for v in value]
        if isinstance(value, tuple)
        else ({k: jsonable(v) for k, v in value.items()} if isinstance(value, dict) else value)
    )


@dataclasses.dataclass
class Run:
    """One run of a group: its seed, task, directory and settings (config.json)."""

    seed: int
    task: Any
    task_index: int  # its task's row of reward/mask labels in the group's buffer
    run_dir: str
    settings: dict

    @property
    def checkpoint_path(self):
        return os.path.join(self.run_dir, CHECKPOINT_NAME)


def _runs_below(run_dir):
    """The run directories (folders with a config.json) below `run_dir`, at any depth."""
    for folder, folders, files in os.walk(run_dir):
        if folder != run_dir and 'config.json' in files:
            folders.clear()  # a run's own folders (wandb's) hold no runs
            yield folder


def _check_run_dir_shape(run_dir, n_runs):
    """A group's runs go in <run-dir>/<task>/seed<seed>, one run's files in --run-dir itself: refuses mixing
    the two in one folder, or writing into a folder of other runs (a root of runs given as --run-dir for
    --runs-dir): launch/tables.py would count both."""
    holds_a_single_run = bool(run_dir) and os.path.exists(os.path.join(run_dir, 'config.json'))
    if n_runs > 1 and holds_a_single_run:
        raise UserError(
            f'{run_dir} holds a single run (its config.json), and a group of {n_runs} runs goes in folders below '
            '--run-dir: pass another --run-dir'
        )
    if not run_dir or holds_a_single_run:
        return
    for below in _runs_below(run_dir):
        depth = len(os.path.relpath(below, run_dir).split(os.sep))
        if n_runs == 1 and depth == 2 and os.path.basename(below).startswith('seed'):
            raise UserError(
                f'{run_dir} holds the runs of a group ({below}, ...), and a single run writes its files in --run-dir '
                "itself: pass another --run-dir (or the group's --seeds/--task to go on with it)"
            )
        if n_runs == 1 or depth != 2:
            raise UserError(
                f'{run_dir} holds other runs ({below}, ...), laid out as no run of --run-dir is: pass another '
                '--run-dir (a root of runs is --runs-dir)'
            )


@functools.cache
def ogbench_version():
    return metadata.version('ogbench')  # read once: it parses the package's metadata (0.3 ms, per run of a group)


@functools.cache
def code_version():
    """This repository's commit (`git describe --always --dirty`: '-dirty' with uncommitted changes), or None
    outside a git checkout: config.json and final.json record it, so runs of different code can be told apart."""
    try:
        out = subprocess.run(
            ['git', 'describe', '--always', '--dirty', '--abbrev=12'],
            cwd=pathlib.Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def plan_runs(args, mode, tasks, seeds, config):
    """The group's runs; checks every existing run directory before anything is written."""
    n_runs = len(tasks) * len(seeds)
    fit = room_for_runs(n_runs, wandb=args.wandb != 'disabled')
    if fit == 0:  # not even one: smaller groups would not help ('train at most 0 per command')
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        raise UserError(
            f'this process may open at most {hard} files (ulimit -Hn), too few to train a run beside the '
            f'{SHARED_OPEN_FILES} it keeps for JAX, the env workers and their pipes: raise the limit '
            '(e.g. ulimit -n 1024)'
        )
    if fit < n_runs:
        raise UserError(
            f'{n_runs} runs in one program hold {n_runs} open files while they train (a lock each), more than this '
            f'process may open (ulimit -n): train at most {fit} per command (e.g. --seeds in smaller ranges)'
        )
    _check_run_dir_shape(args.run_dir, n_runs)
    runs = []
    for task_index, task in enumerate(tasks):
        for seed in seeds:
            if args.run_dir and n_runs == 1:
                run_dir = args.run_dir
            elif args.run_dir:
                run_dir = os.path.join(args.run_dir, task.name, f'seed{seed}')
            else:
                run_dir = os.path.join(args.runs_dir or 'runs', mode, task.name, args.agent, f'seed{seed}')
            blocker = nearest_existing(run_dir)
            if not os.path.isdir(blocker):
                flag = '--run-dir' if args.run_dir else '--runs-dir'
                raise UserError(f'{blocker} is a file, so {run_dir} cannot be a run directory: pass another {flag}')
            run = Run(seed, task, task_index, run_dir, run_settings(args, task, seed, config, mode))
            config_path = os.path.join(run_dir, 'config.json')
            if not os.path.exists(config_path) and keeps_progress(run_dir):
                raise UserError(
                    f'{run_dir} holds a run without its config.json, so its settings are unknown: put its config.json '
                    'back, or delete the folder to train the run again'
                )
            if os.path.exists(config_path) and keeps_progress(run_dir):
                check_same_run(run_dir, run.settings)
            elif args.resume:
                raise UserError(f'--resume: {run_dir} holds no checkpoint to resume from')
            elif os.path.exists(config_path):
                differences = _differences(read_json(config_path), run.settings)
                if differences:  # config.json is rewritten once the run starts
                    print(
                        f'note: {run_dir} kept nothing of its earlier start (no checkpoint yet); it starts again '
                        f'with {", ".join(differences)}'
                    )
            runs.append(run)
    return runs
