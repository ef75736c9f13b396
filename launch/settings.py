"""Command line, settings and run directories of `launch/offline.py` and `launch/o2o.py`.

Parses the flags and `--agent.FIELD=VALUE` overrides, resolves `--env`/`--task` and `--seed(s)` into a
group's runs, and gives each run its directory and `config.json` settings, refusing a directory that
holds a run with other settings. `launch/loop.py` trains the runs.
"""

import dataclasses
import functools
import glob
import os
import pathlib
import re
import subprocess
from importlib import metadata
from typing import Any

from agents import AGENTS
from datasets.buffer import RING_ROW_LIMIT
from datasets.d4rl_data import BACKENDS
from datasets.generate import DEFAULT_DATASET_DIR, GenerationError, generatable_family
from envs.factory import SUCCESS_TIMING
from envs.registry import resolve_task
from launch.checkpoint import CHECKPOINT_NAME
from launch.command_line import CommandLineParser, UserError, check_folder, check_writable_folder
from launch.run_lock import room_for_runs
from launch.run_logs import STOPPED_NAME, read_json

# Settings that may change between a run and its resumption without changing the result.
RESUMABLE_DIFFERENCES = ('resume', 'wandb', 'progress', 'workers', 'max_eval_envs', 'code_version')
# Settings known once the data is loaded (config.json records the resolved values).
RESOLVED_WITH_THE_DATA = ('buffer_capacity', 'dataset_origin')
# RLPD is SAC trained online from scratch with half-offline, half-online batches (O2O only).
RLPD = dict(agent='sac', balanced_sampling=True, offline_steps=0)


# ---------------------------------------------------------------------------------------------------
# Command line


# Mistakes on offline.py's command line that it can say more about than argparse.
OFFLINE_HINTS = {"invalid choice: 'rlpd'": '--agent rlpd trains online from scratch: use launch/o2o.py --agent rlpd'}


def build_parser(mode):
    p = CommandLineParser(
        prog=f'launch/{mode}.py',
        allow_abbrev=False,  # '--runs X' must not pass for --runs-dir (the sweep sets it per job)
        description=f'{"Offline" if mode == "offline" else "Offline-to-online"} RL on one benchmark task. '
        'Agent settings: --agent.FIELD=VALUE (e.g. --agent.beta=0.5 --agent.hidden_dims=64,64).',
        hints=OFFLINE_HINTS if mode == 'offline' else None,
    )
    p.add_argument('--list-tasks', choices=['offline', 'o2o'], help='print the tasks of a suite and exit')
    p.add_argument('--env', help="task name or family, e.g. 'cube-double' or 'cube-double-play-singletask-task2-v0'")
    p.add_argument(
        '--task',
        help="task id 1..5 when --env names a family (default: OGBench's default), or 'all': its 5 tasks as one group",
    )
    agents = sorted(AGENTS) + (['rlpd'] if mode == 'o2o' else [])
    rlpd_help = '; rlpd = sac + --balanced-sampling + --offline-steps 0' if mode == 'o2o' else ''
    p.add_argument('--agent', default='fav', choices=agents, help=f'default: fav{rlpd_help}')
    p.add_argument('--seed', type=int, help='one seed (default 0)')
    p.add_argument('--seeds', help='several seeds trained as one group, e.g. 0-7 or 0,3,5')
    p.add_argument('--offline-steps', type=int, help='default: 1000000 (0 with --agent rlpd)')
    if mode == 'o2o':
        p.add_argument('--online-steps', type=int, default=1_000_000)
        p.add_argument(
            '--balanced-sampling',
            action='store_true',
            help='online batches half from the offline data, half from the online transitions (as RLPD)',
        )
        p.add_argument(
            '--online-updates-per-call',
            type=int,
            default=1,
            help='env steps collected (policy held fixed) per compiled call of as many updates',
        )
        p.add_argument(
            '--buffer-capacity',
            type=int,
            help='rows of the O2O replay ring; once full, online transitions overwrite the oldest rows '
            '(default, as the reference: max(2000000, dataset rows + 1); with --balanced-sampling, '
            'dataset rows + 2000000)',
        )
    p.add_argument('--eval-every', type=int, default=100_000)
    p.add_argument('--eval-episodes', type=int, default=50)
    p.add_argument(
        '--eval-envs',
        type=int,
        default=10,
        help='env copies stepped in parallel processes during evaluation (part of the result)',
    )
    p.add_argument(
        '--max-eval-envs',
        type=int,
        default=50,
        help='env copies alive at once when a group evaluates (about 150 MB each for manipulation envs); '
        'a larger group evaluates its runs in rounds, with the same results',
    )
    p.add_argument('--log-every', type=int, default=5_000)
    p.add_argument('--save-every', type=int, default=100_000)
    p.add_argument('--updates-per-call', type=int, default=1000, help='K offline updates per compiled call')
    p.add_argument(
        '--dataset',
        help='an OGBench dataset .npz (its -val.npz beside it); for D4RL AntMaze, its .hdf5 file (legacy backend) '
        'or a Minari dataset directory',
    )
    p.add_argument(
        '--dataset-dir',
        help=f'where official/generated datasets live (default: {DEFAULT_DATASET_DIR}; for D4RL AntMaze, '
        "the backend's own: $D4RL_DATASET_DIR or ~/.d4rl/datasets, $MINARI_DATASETS_PATH or ~/.minari/datasets)",
    )
    p.add_argument(
        '--backend',
        choices=BACKENDS,
        help='D4RL AntMaze data and envs: legacy d4rl (the paper) or minari (default: d4rl if it imports)',
    )
    p.add_argument('--dataset-episodes', type=int, help='generate (or reuse) a smaller dataset of N episodes')
    p.add_argument('--workers', type=int, help='processes for dataset generation (default: all cores)')
    p.add_argument(
        '--run-dir',
        help=f'default: runs/{mode}/<task>/<agent>/seed<seed>; with several runs, their parent: '
        '<run-dir>/<task>/seed<seed>',
    )
    p.add_argument(
        '--runs-dir', help=f'root of the default layout: <runs-dir>/{mode}/<task>/<agent>/seed<seed> (default: runs)'
    )
    p.add_argument('--resume', action='store_true', help="continue from the run directory's checkpoint")
    p.add_argument('--wandb', choices=['online', 'offline', 'disabled'], default='disabled')
    p.add_argument('--no-progress', dest='progress', action='store_false', help='hide progress bars')
    return p


def _parse_value(text, default, name):
    try:
        if isinstance(default, bool):
            if text.lower() not in ('true', 'false', '1', '0'):
                raise ValueError
            return text.lower() in ('true', '1')
        if isinstance(default, tuple):
            return tuple(int(v) for v in text.strip('()[] ').split(','))  # int('') refuses '32,,32' and '32,'
        return type(default)(text)
    except ValueError:
        if isinstance(default, bool):
            raise UserError(f'--agent.{name}={text}: expected true or false') from None
        like = ','.join(map(str, default)) if isinstance(default, tuple) else default
        kind = {int: 'an integer', float: 'a number', tuple: 'integers'}.get(type(default), 'a value')
        raise UserError(f'--agent.{name}={text}: expected {kind} like {like}') from None


def parse_args(argv, mode):
    """argparse plus `--agent.FIELD=VALUE` overrides, checked against the agent's config fields."""
    parser = build_parser(mode)
    args, rest = parser.parse_known_args(argv)
    raw = {}
    for item in rest:
        if not item.startswith('--agent.') or '=' not in item:
            option = item.split('=', 1)[0]
            if mode == 'offline' and option in build_parser('o2o')._option_string_actions:
                raise UserError(f'{option} is an O2O setting: use launch/o2o.py (or --mode o2o in a sweep)')
            raise UserError(f'unrecognized argument {item} (agent settings are written --agent.FIELD=VALUE)')
        key, value = item[len('--agent.') :].split('=', 1)
        raw[key] = value
    if args.agent == 'rlpd':
        if args.offline_steps not in (None, 0):
            raise UserError(f'--agent rlpd trains online from scratch: drop --offline-steps {args.offline_steps}')
        args.offline_steps, args.balanced_sampling = RLPD['offline_steps'], RLPD['balanced_sampling']
    if args.offline_steps is None:
        args.offline_steps = 1_000_000
    config_cls = agent_module(args.agent).Config
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise UserError(f'unknown agent setting --agent.{unknown[0]}; valid: {", ".join(sorted(defaults))}')
    args.agent_overrides = {k: _parse_value(v, defaults[k], k) for k, v in raw.items()}
    if mode == 'offline':
        args.online_steps, args.online_updates_per_call, args.balanced_sampling = 0, 1, False
        args.buffer_capacity = None
    for name in PATH_ARGS:  # one spelling per place: '~' as the shell would (it does not after '='), no trailing '/'
        if getattr(args, name):  # '' is refused by validate_args
            setattr(args, name, os.path.normpath(os.path.expanduser(getattr(args, name))))
    return args


def agent_module(name):
    """The module of agent `name` ('rlpd' is the SAC agent)."""
    return AGENTS[RLPD['agent'] if name == 'rlpd' else name]


def agent_config(args, mode, family):
    """The agent's config for a task of `family` from the parsed settings; what the task cannot take is
    refused in one line (UserError)."""
    if family.source == 'd4rl' and args.dataset_episodes is not None:
        raise UserError('--dataset-episodes generates OGBench manipulation data; D4RL AntMaze reads its datasets')
    if args.dataset_episodes is not None and args.dataset is None:
        try:
            generatable_family(family.name)
        except GenerationError as e:
            raise UserError(f'--dataset-episodes: {e}') from None
    try:
        return agent_module(args.agent).get_config(family, args.agent_overrides, mode=mode)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None


# Steps reach the compiled loop as int32 (jax_enable_x64 is off): a run has fewer; a period as long would never come.
STEP_LIMIT = 2**31
STEP_PERIODS = ('eval_every', 'log_every', 'save_every', 'updates_per_call', 'online_updates_per_call')
PATH_ARGS = ('dataset', 'dataset_dir', 'run_dir', 'runs_dir')


def validate_args(args, mode):
    positive = ['eval_episodes', 'eval_envs', 'max_eval_envs', *STEP_PERIODS]
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if mode == 'offline' and args.offline_steps < 1:
        raise UserError(f'--offline-steps must be >= 1, got {args.offline_steps}')
    if args.offline_steps < 0 or args.online_steps < 0 or args.offline_steps + args.online_steps < 1:
        raise UserError('--offline-steps and --online-steps must be >= 0 and not both 0')
    if mode == 'o2o' and args.online_steps < 1:
        raise UserError('--online-steps must be >= 1 for an O2O run (offline training alone: launch/offline.py)')
    for name in ('offline_steps', 'online_steps', *STEP_PERIODS):
        if (value := getattr(args, name)) >= STEP_LIMIT:
            flag = f'--{name.replace("_", "-")}'
            raise UserError(f'{flag} must be < {STEP_LIMIT} (steps are counted in int32), got {value}')
    if args.offline_steps + args.online_steps >= STEP_LIMIT:
        raise UserError(
            f'--offline-steps + --online-steps must be < {STEP_LIMIT} (steps are counted in int32), '
            f'got {args.offline_steps + args.online_steps}'
        )
    for name in PATH_ARGS:
        if getattr(args, name) == '':  # not read as 'not given': that would train into or read the default place
            flag = f'--{name.replace("_", "-")}'
            raise UserError(f'{flag} is empty: give a path, or leave {flag} out for the default')
    if args.run_dir and args.runs_dir:
        raise UserError("give --run-dir (a run's directory, or a group's parent) or --runs-dir (a root), not both")
    if args.dataset is not None and args.dataset_episodes is not None:
        raise UserError('give --dataset (a dataset file) or --dataset-episodes (a generated dataset), not both')
    if args.dataset_episodes is not None and args.dataset_episodes < 1:
        raise UserError(f'--dataset-episodes must be >= 1, got {args.dataset_episodes}')
    if args.buffer_capacity is not None and args.buffer_capacity < 1:  # None offline
        raise UserError(f"--buffer-capacity must be >= 1 (and hold the dataset's rows), got {args.buffer_capacity}")
    if args.buffer_capacity is not None and args.buffer_capacity >= RING_ROW_LIMIT:
        raise UserError(
            f'--buffer-capacity must be < {RING_ROW_LIMIT} (its rows are counted in int32), got {args.buffer_capacity}'
        )
    if args.dataset_dir is not None:
        check_folder('--dataset-dir', args.dataset_dir)
    # The run directories are made once the data is loaded (maybe generated): a place they cannot go is refused now.
    check_writable_folder(*(('--run-dir', args.run_dir) if args.run_dir else ('--runs-dir', args.runs_dir or 'runs')))
    if args.wandb != 'disabled':
        try:
            import wandb  # optional: checked here, before anything is written
        except ImportError:
            raise UserError(f'--wandb {args.wandb} needs wandb: pip install -e ".[wandb]" (or drop --wandb)') from None
        if args.wandb == 'online':
            try:  # the credentials, without a request to the server; in a terminal wandb asks for the key
                wandb.login(verify=False)
            except wandb.errors.Error as e:
                reason = str(e).splitlines()[0].rstrip('.')
                raise UserError(
                    f'--wandb online: wandb has no usable credentials ({reason}); set WANDB_API_KEY or use --wandb '
                    'offline'
                ) from None


# ---------------------------------------------------------------------------------------------------
# Tasks, seeds and run directories


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


def _check_run_dir_shape(run_dir, n_runs):
    """A group's runs go in folders below --run-dir, one run's files in it: refuses mixing the two in one folder
    (launch/tables.py would count both)."""
    holds_a_single_run = bool(run_dir) and os.path.exists(os.path.join(run_dir, 'config.json'))
    if n_runs > 1 and holds_a_single_run:
        raise UserError(
            f'{run_dir} holds a single run (its config.json), and a group of {n_runs} runs goes in folders below '
            '--run-dir: pass another --run-dir'
        )
    if not run_dir or n_runs > 1 or holds_a_single_run:
        return
    group_runs = glob.glob(os.path.join(glob.escape(run_dir), '*', 'seed*', 'config.json'))
    if group_runs:
        raise UserError(
            f'{run_dir} holds the runs of a group ({os.path.dirname(group_runs[0])}, ...), and a single run writes '
            "its files in --run-dir itself: pass another --run-dir (or the group's --seeds/--task to go on with it)"
        )


def _file_in_the_way(path):
    """The nearest existing path on the way to `path` (itself included) if it is not a directory, else None."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return None if os.path.isdir(path) else path


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
            blocker = _file_in_the_way(run_dir)
            if blocker:
                raise UserError(f'{blocker} is a file, so {run_dir} cannot be a run directory: pass another --run-dir')
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
