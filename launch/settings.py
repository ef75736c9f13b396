"""The command line of `launch/offline.py` and `launch/o2o.py`: the flags and `--agent.FIELD=VALUE`
overrides parsed, checked and turned into the agent's config, every mistake refused in one line before anything
is written. `launch/run_plan.py` turns the settings into the group's runs and their directories.
"""

import dataclasses
import difflib
import os

from agents import AGENTS
from datasets.buffer import RING_ROW_LIMIT
from datasets.d4rl_data import BACKENDS
from datasets.generate import DEFAULT_DATASET_DIR, GenerationError, generatable_family
from launch.command_line import CommandLineParser, UserError, check_folder, check_writable_folder

# RLPD is SAC trained online from scratch with half-offline, half-online batches (O2O only).
RLPD = dict(agent='sac', balanced_sampling=True, offline_steps=0)


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
    rlpd_steps = ' (0 with --agent rlpd)' if mode == 'o2o' else ''  # offline.py has no rlpd
    p.add_argument('--offline-steps', type=int, help=f'default: 1000000{rlpd_steps}')
    if mode == 'o2o':
        p.add_argument('--online-steps', type=int, default=1_000_000, help='env steps online (default: 1000000)')
        p.add_argument(
            '--balanced-sampling',
            action='store_true',
            help='online batches half from the offline data, half from the online transitions (as RLPD)',
        )
        p.add_argument(
            '--online-updates-per-call',
            type=int,
            default=1,
            help='env steps collected (policy held fixed) per compiled call of as many updates (default: 1, one '
            'update per env step)',
        )
        p.add_argument(
            '--buffer-capacity',
            type=int,
            help='rows of the O2O replay ring; once full, online transitions overwrite the oldest rows '
            '(default, as the reference: max(2000000, dataset rows + 1); with --balanced-sampling, '
            'dataset rows + 2000000)',
        )
    p.add_argument(
        '--eval-every',
        type=int,
        default=100_000,
        help='evaluate every N steps, at step 1 and at the end of each phase (default: 100000)',
    )
    p.add_argument('--eval-episodes', type=int, default=50, help='episodes per evaluation (default: 50)')
    p.add_argument(
        '--eval-envs',
        type=int,
        default=10,
        help='env copies stepped in parallel processes during evaluation (part of the result; default: 10)',
    )
    p.add_argument(
        '--max-eval-envs',
        type=int,
        default=50,
        help='env copies alive at once when a group evaluates (about 150 MB each for manipulation envs); '
        'a larger group evaluates its runs in rounds, with the same results (default: 50)',
    )
    p.add_argument('--log-every', type=int, default=5_000, help='log training metrics every N steps (default: 5000)')
    p.add_argument(
        '--save-every',
        type=int,
        default=100_000,
        help='checkpoint every N steps and at the end of each phase (default: 100000)',
    )
    p.add_argument(
        '--updates-per-call', type=int, default=1000, help='K offline updates per compiled call (default: 1000)'
    )
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
    p.add_argument(
        '--resume',
        action='store_true',
        help="continue from the run directory's checkpoint, and refuse a run directory without one (a rerun "
        'without --resume continues from a checkpoint too, or starts the run)',
    )
    p.add_argument(
        '--wandb',
        choices=['online', 'offline', 'disabled'],
        default='disabled',
        help='also log to Weights & Biases (the wandb extra; default: disabled)',
    )
    p.add_argument('--no-progress', dest='progress', action='store_false', help='hide progress bars')
    return p


def _parse_value(text, default, name):
    try:
        if isinstance(default, bool):
            if text.lower() not in ('true', 'false', '1', '0'):
                raise ValueError
            return text.lower() in ('true', '1')
        if isinstance(default, tuple):
            value = tuple(int(v) for v in text.strip('()[] ').split(','))  # int('') refuses '32,,32' and '32,'
        else:
            value = type(default)(text)
    except ValueError:
        if isinstance(default, bool):
            raise UserError(f'--agent.{name}={text}: expected true or false') from None
        like = ','.join(map(str, default)) if isinstance(default, tuple) else default
        kind = {int: 'an integer', float: 'a number', tuple: 'integers'}.get(type(default), 'a value')
        raise UserError(f'--agent.{name}={text}: expected {kind} like {like}') from None
    # JAX takes a Python int as int32 (jax_enable_x64 is off): a larger one was an OverflowError traceback.
    if any(v >= STEP_LIMIT for v in (value if isinstance(value, tuple) else (value,)) if isinstance(v, int)):
        raise UserError(f'--agent.{name}={text}: must be < {STEP_LIMIT} (integers reach JAX as int32)')
    return value


def _flag_hint(option, parser):
    """The flag a mistyped one was most likely meant to be, or how agent settings are written."""
    if option.startswith('--agent.'):
        return ' (agent settings are written --agent.FIELD=VALUE)'
    close = difflib.get_close_matches(option, [o for o in parser._option_string_actions if o.startswith('--')], n=1)
    return f'; did you mean {close[0]}?' if close else f' (see {parser.prog} --help)'


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
            raise UserError(f'unrecognized argument {item}{_flag_hint(option, parser)}')
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
        raise UserError(
            f'unknown agent setting --agent.{unknown[0]} for --agent {args.agent}; valid: {", ".join(sorted(defaults))}'
        )
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
    if args.workers is not None and args.workers < 1:  # before a download is tried, not at the generation after it
        raise UserError(f'--workers must be >= 1, got {args.workers}')
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
        try:  # wandb reads WANDB_* variables at its first run; a bad one would be a traceback mid-training
            wandb.Settings().update_from_env_vars(dict(os.environ))
        except ValueError as e:
            first = e.errors()[0] if hasattr(e, 'errors') else dict(loc=(), msg=str(e).splitlines()[0])
            name = 'WANDB_' + '_'.join(map(str, first['loc'])).upper() if first['loc'] else 'a WANDB_* variable'
            raise UserError(
                f'--wandb {args.wandb}: the environment sets {name} to a value wandb refuses ({first["msg"]}); '
                'fix or unset it'
            ) from None
        if args.wandb == 'online':
            try:  # the credentials, without a request to the server; in a terminal wandb asks for the key
                wandb.login(verify=False)
            except wandb.errors.Error as e:
                reason = str(e).splitlines()[0].rstrip('.')
                raise UserError(
                    f'--wandb online: wandb has no usable credentials ({reason}); set WANDB_API_KEY or use --wandb '
                    'offline'
                ) from None
