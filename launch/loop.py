"""The one training loop behind `launch/offline.py` and `launch/o2o.py`.

Command line → tasks and seeds (envs.registry) → data (datasets) → agents (agents) → this loop → run
directories. Every run trains in a group (a single run is a group of one): the group's agents are
stacked and updated K at a time inside one compiled, `vmap`-ed `lax.scan`; the batch of update `i` of
a run is drawn with `fold_in(data_key, i)` from its seed and each agent carries its own key, so a seed
gives the same run whatever K is and whatever group it is in. Logging, evaluation and checkpoints
happen on chunk boundaries, into each run's own directory.
"""

import argparse
import contextlib
import dataclasses
import os
import re
import sys
import time
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from tqdm import tqdm

from agents import AGENTS
from datasets.buffer import LABEL_KEYS, GroupBuffer, default_capacity
from datasets.d4rl_data import BACKENDS, load_d4rl_data
from datasets.generate import DEFAULT_DATASET_DIR
from datasets.ogbench_data import DatasetError, load_task_data
from envs.evaluation import episode_seed, evaluate, final_score
from envs.factory import SUCCESS_TIMING, make_env, make_env_pool, with_backend
from envs.registry import UnknownTaskError, resolve_task, suite_tasks
from launch.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from launch.compiled import offline_chunk, online_chunk, policy_action
from launch.run_lock import RunLockedError, run_lock
from launch.run_logs import RunLogger, read_json, write_json

# Settings that may change between a run and its resumption without changing the result.
RESUMABLE_DIFFERENCES = ('resume', 'wandb', 'progress', 'workers')
# RLPD is SAC trained online from scratch with half-offline, half-online batches (O2O only).
RLPD = dict(agent='sac', balanced_sampling=True, offline_steps=0)


class UserError(Exception):
    """A bad setting or input: reported as one line, exit code 2."""


class NonFiniteError(Exception):
    """Training produced NaN/inf: reported with the step and metric, exit code 1."""


# ---------------------------------------------------------------------------------------------------
# Command line


def build_parser(mode):
    p = argparse.ArgumentParser(
        prog=f'launch/{mode}.py',
        description=f'{"Offline" if mode == "offline" else "Offline-to-online"} RL on one benchmark task. '
        'Agent settings: --agent.FIELD=VALUE (e.g. --agent.beta=0.5 --agent.hidden_dims=64,64).',
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
            '(default, as the reference: max(2000000, dataset rows + 1))',
        )
    p.add_argument('--eval-every', type=int, default=100_000)
    p.add_argument('--eval-episodes', type=int, default=50)
    p.add_argument(
        '--eval-envs',
        type=int,
        default=10,
        help='env copies stepped in parallel processes during evaluation (part of the result)',
    )
    p.add_argument('--log-every', type=int, default=5_000)
    p.add_argument('--save-every', type=int, default=100_000)
    p.add_argument('--updates-per-call', type=int, default=1000, help='K offline updates per compiled call')
    p.add_argument('--dataset', help='path of a dataset .npz (its -val.npz beside it)')
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
            return tuple(int(v) for v in text.strip('()[] ').split(',') if v.strip())
        return type(default)(text)
    except ValueError:
        raise UserError(f'--agent.{name}={text}: expected a {type(default).__name__} like {default!r}') from None


def parse_args(argv, mode):
    """argparse plus `--agent.FIELD=VALUE` overrides, checked against the agent's config fields."""
    parser = build_parser(mode)
    args, rest = parser.parse_known_args(argv)
    raw = {}
    for item in rest:
        if not item.startswith('--agent.') or '=' not in item:
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
    return args


def agent_module(name):
    """The module of agent `name` ('rlpd' is the SAC agent)."""
    return AGENTS[RLPD['agent'] if name == 'rlpd' else name]


def _validate_args(args):
    positive = [
        'eval_episodes',
        'eval_envs',
        'eval_every',
        'log_every',
        'save_every',
        'updates_per_call',
        'online_updates_per_call',
    ]
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.offline_steps < 0 or args.online_steps < 0 or args.offline_steps + args.online_steps < 1:
        raise UserError('--offline-steps and --online-steps must be >= 0 and not both 0')
    if args.dataset_episodes is not None and args.dataset_episodes < 1:
        raise UserError(f'--dataset-episodes must be >= 1, got {args.dataset_episodes}')


# ---------------------------------------------------------------------------------------------------
# The run


def parse_seeds(args):
    """`--seed S` or `--seeds 0-7` / `--seeds 0,3,5` → the list of seeds (default [0])."""
    if args.seeds is None:
        return [0 if args.seed is None else args.seed]
    if args.seed is not None:
        raise UserError('give --seed or --seeds, not both')
    seeds = []
    for part in args.seeds.split(','):
        match = re.fullmatch(r'\s*(\d+)\s*(?:-\s*(\d+)\s*)?', part)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise UserError(f'--seeds {args.seeds}: expected seeds like 0-7 or 0,3,5 (non-negative, ranges low-high)')
        seeds += range(int(match[1]), int(match[2] or match[1]) + 1)
    if len(set(seeds)) != len(seeds):
        raise UserError(f'--seeds {args.seeds} names a seed twice')
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


def _settings(args, task, seed, config, mode):
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
        log_every=args.log_every,
        save_every=args.save_every,
        updates_per_call=args.updates_per_call,
        online_updates_per_call=args.online_updates_per_call,
        balanced_sampling=args.balanced_sampling,
        buffer_capacity=args.buffer_capacity,  # replaced by the rows it resolves to once the data is loaded
        backend=task.backend,
        dataset=args.dataset,
        dataset_dir=args.dataset_dir,
        dataset_episodes=args.dataset_episodes,
        workers=args.workers,
        resume=args.resume,
        wandb=args.wandb,
        progress=args.progress,
        success_timing=SUCCESS_TIMING,
        ogbench_version=metadata.version('ogbench'),
        agent_config=dataclasses.asdict(config),
    )


def _check_same_run(run_dir, settings):
    saved = read_json(os.path.join(run_dir, 'config.json'))
    for key in sorted(set(saved) | set(settings)):
        if key in RESUMABLE_DIFFERENCES or (key == 'buffer_capacity' and settings[key] is None):
            continue  # a default capacity resolves to the same rows for the same data
        if saved.get(key) != _jsonable(settings.get(key)):
            raise UserError(
                f'{run_dir} holds a run with {key}={saved.get(key)!r}, not {settings.get(key)!r}; '
                'pass another --run-dir (or the same settings to resume it)'
            )


def _jsonable(value):
    return (
        [_jsonable(v) for v in value]
        if isinstance(value, tuple)
        else ({k: _jsonable(v) for k, v in value.items()} if isinstance(value, dict) else value)
    )


def _next_boundary(step, end, every, k):
    """The next step at which to stop a compiled chunk: a multiple of K or of a logging/eval/save
    period, step 1 (the protocol's first evaluation) or the end of the phase."""
    candidates = [end] + [(step // n + 1) * n for n in (k, *every)]
    if step == 0:
        candidates.append(1)
    return min(c for c in candidates if c > step)


def _is_eval_step(step, args):
    return (
        step == 1 or step % args.eval_every == 0 or step in (args.offline_steps, args.offline_steps + args.online_steps)
    )


@dataclasses.dataclass
class Run:
    """One run of a group: its seed, task, directory and settings (config.json)."""

    seed: int
    task: Any
    task_index: int  # its task's reward/mask column in the group's buffer
    run_dir: str
    settings: dict

    @property
    def checkpoint_path(self):
        return os.path.join(self.run_dir, CHECKPOINT_NAME)


def _plan_runs(args, mode, tasks, seeds, config):
    """The group's runs; checks every existing run directory before anything is written."""
    runs = []
    for task_index, task in enumerate(tasks):
        for seed in seeds:
            if args.run_dir and len(tasks) * len(seeds) == 1:
                run_dir = args.run_dir
            elif args.run_dir:
                run_dir = os.path.join(args.run_dir, task.name, f'seed{seed}')
            else:
                run_dir = os.path.join('runs', mode, task.name, args.agent, f'seed{seed}')
            run = Run(seed, task, task_index, run_dir, _settings(args, task, seed, config, mode))
            if os.path.exists(os.path.join(run_dir, 'config.json')):
                _check_same_run(run_dir, run.settings)
            elif args.resume:
                raise UserError(f'--resume: {run_dir} holds no run to resume')
            runs.append(run)
    return runs


def _load_group_data(args, tasks):
    """The dataset's transitions once (without LABEL_KEYS), and each task's reward/mask relabeling."""
    dataset, labels = None, {k: [] for k in LABEL_KEYS}
    for task in tasks:
        env = make_env(task)  # reads the task's goal to relabel the dataset
        try:
            if task.family.source == 'd4rl':
                train_data = load_d4rl_data(task, env, dataset_path=args.dataset, dataset_dir=args.dataset_dir)
            else:
                train_data, _ = load_task_data(
                    task,
                    env,
                    dataset_path=args.dataset,
                    dataset_dir=args.dataset_dir,
                    dataset_episodes=args.dataset_episodes,
                    seed=0,
                    workers=args.workers,
                )
        finally:
            env.close()
        if dataset is None:
            dataset = {k: v for k, v in train_data.items() if k not in LABEL_KEYS}
        for k in LABEL_KEYS:
            labels[k].append(train_data[k])
        del train_data
    return dataset, {k: np.stack(v) for k, v in labels.items()}


def _run_keys(seed):
    """A run's (agent, data, act, eval) keys, from its seed alone: the same in any group."""
    root = jax.random.PRNGKey(seed)
    return [jax.random.fold_in(root, i) for i in range(4)]


def _select(tree, indices):
    """The runs `indices` (a list: a group of them; an int: one run) of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[np.asarray(indices)], tree)


def run(args, mode):
    _validate_args(args)
    seeds = parse_seeds(args)
    try:
        tasks = [with_backend(task, args.backend) for task in resolve_tasks(args)]
    except ValueError as e:
        if isinstance(e, UnknownTaskError):
            raise
        raise UserError(str(e)) from None
    if tasks[0].family.source == 'd4rl' and args.dataset_episodes is not None:
        raise UserError('--dataset-episodes generates OGBench manipulation data; D4RL AntMaze reads its datasets')
    module = agent_module(args.agent)
    try:
        config = module.get_config(tasks[0].family, args.agent_overrides, mode=mode)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    runs = _plan_runs(args, mode, tasks, seeds, config)
    finals = {}
    for run in runs:
        final_path = os.path.join(run.run_dir, 'final.json')
        if os.path.exists(final_path):
            print(f'{run.run_dir} is complete: {final_path}')
            finals[run.run_dir] = read_json(final_path)
    todo = [r for r in runs if r.run_dir not in finals]
    if not todo:
        return [finals[r.run_dir] for r in runs]
    dataset, labels = _load_group_data(args, tasks)
    capacity = _buffer_capacity(args, mode, len(dataset['observations']))
    for r in todo:
        r.settings['buffer_capacity'] = capacity
    # Run directories appear only once the data is good, so a bad --dataset leaves nothing behind.
    for r in todo:
        os.makedirs(r.run_dir, exist_ok=True)
    with contextlib.ExitStack() as locks:
        for r in todo:  # one process per run directory; another one is refused naming the holder
            locks.enter_context(run_lock(r.run_dir))
        for r in todo:  # finished by another process while this one loaded the data
            final_path = os.path.join(r.run_dir, 'final.json')
            if os.path.exists(final_path):
                finals[r.run_dir] = read_json(final_path)
        todo = [r for r in todo if r.run_dir not in finals]
        if todo:
            _train_group(args, mode, module, config, todo, dataset, labels, capacity, finals)
    return [finals[r.run_dir] for r in runs]


def _buffer_capacity(args, mode, offline_rows):
    """The rows of each run's replay ring: the dataset offline, else --buffer-capacity or the default."""
    if mode == 'offline':
        return offline_rows  # nothing is appended offline
    if args.buffer_capacity is None:
        return default_capacity(offline_rows)
    if args.buffer_capacity < max(offline_rows, args.online_updates_per_call):
        raise UserError(
            f'--buffer-capacity {args.buffer_capacity} is smaller than the dataset ({offline_rows} rows) '
            'or --online-updates-per-call; omit it for the default max(2000000, rows + 1)'
        )
    return args.buffer_capacity


def _train_group(args, mode, module, config, todo, dataset, labels, capacity, finals):
    """Trains the runs `todo` (their locks held) and records their final.json in `finals`."""
    checkpoints = [load_checkpoint(r.checkpoint_path) if os.path.exists(r.checkpoint_path) else None for r in todo]
    for r in todo:
        write_json(os.path.join(r.run_dir, 'config.json'), _jsonable(r.settings))
    buffer = GroupBuffer.create(dataset, labels, [r.task_index for r in todo], capacity)
    keys = jnp.stack([jnp.stack(_run_keys(r.seed)) for r in todo])  # (R, 4, 2)
    example = (buffer.runs.data['observations'][0, :1], buffer.runs.data['actions'][0, :1])
    agents = jax.vmap(lambda key: module.Agent.create(key, *example, config))(keys[:, 0])
    # Runs resume from their own checkpoints; runs at different steps (a kill between two runs'
    # saves) train as separate groups, the ones behind first.
    steps = [0 if c is None else int(c.get('step', 0)) for c in checkpoints]
    for step in sorted(set(steps)):
        members = [i for i, s in enumerate(steps) if s == step]
        if len(members) < len(todo):
            group = (buffer.select_runs(members), _select(agents, members), _select(keys, members))
        else:  # the common case: no copies of the buffers
            group = (buffer, agents, keys)
        loop = _Loop(args, [todo[i] for i in members], *group)
        if step:
            loop.restore([checkpoints[i] for i in members])
            print(f'resuming {", ".join(r.run_dir for r in loop.runs)} from step {loop.step}')
        loop.loggers = [
            RunLogger(r.run_dir, args.wandb, _jsonable(r.settings), rows=rows)
            for r, rows in zip(loop.runs, loop.logger_rows, strict=True)
        ]
        try:
            loop.train()
        finally:
            for logger in loop.loggers:
                logger.finish()
            loop.close()
        for r, logger in zip(loop.runs, loop.loggers, strict=True):
            finals[r.run_dir] = _write_final(r, mode, logger.rows['eval'], loop.step, loop.elapsed())


def _write_final(run, mode, evals, steps, elapsed):
    final = dict(
        task=run.task.name,
        agent=run.settings['agent'],
        seed=run.seed,
        mode=mode,
        steps=steps,
        wall_time_s=round(elapsed, 1),
    )
    offline_evals = [r['success'] for r in evals if r['phase'] == 'offline']
    online_evals = [r['success'] for r in evals if r['phase'] == 'online']
    if mode == 'offline':
        final['score'] = final_score(offline_evals)
    else:
        final['offline_score'] = final_score(offline_evals) if offline_evals else None
        final['online_score'] = final_score(online_evals) if online_evals else None
        final['score'] = final['online_score']
    final_path = os.path.join(run.run_dir, 'final.json')
    write_json(final_path, final)
    print(f'final score {final["score"]:.1f} → {final_path}')
    return final


def env_transition(env, observation, action, reward_shift):
    """One online env step → (the transition to store, the episode's statistics if it just ended, else None)."""
    next_observation, reward, terminated, truncated, info = env.step(action)
    transition = make_transition(observation, action, next_observation, reward, terminated, truncated, reward_shift)
    return transition, info['episode'] if terminated or truncated else None


def make_transition(observation, action, next_observation, reward, terminated, truncated, reward_shift):
    """The stored transition of an env step (arrays, or arrays over runs). `masks` is 0 only on
    termination: a truncated episode's last value still bootstraps. `terminals` marks either end of an
    episode. Rewards get the family's shift, as the dataset's did."""
    terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
    transition = dict(
        observations=observation,
        actions=action,  # the buffer clips what it stores
        next_observations=next_observation,
        rewards=np.asarray(reward, np.float32) + np.float32(reward_shift),
        masks=1.0 - terminated,
        terminals=terminated | truncated,
    )
    return {k: np.asarray(v, np.float32) for k, v in transition.items()}


class _Loop:
    """Training state of a group of runs at the same step, and the two phases; each run's part of
    `state()` goes into its own run directory's checkpoint."""

    def __init__(self, args, runs, buffer, agents, keys):
        self.args, self.runs = args, runs
        self.buffer, self.agents = buffer, agents
        self.data_keys, self.act_keys, self.eval_keys = keys[:, 1], keys[:, 2], keys[:, 3]
        self.step = 0
        self.logger_rows = [None] * len(runs)
        self.prior_elapsed, self.started = 0.0, time.time()
        eval_envs = runs[0].settings['eval_envs']
        self.eval_pool = make_env_pool([r.task for r in runs for _ in range(eval_envs)])
        self.online_pool = None
        # Online interaction, per run: episodes are reset with seeds from their index, and the actions
        # of the episode in progress are kept so a resumed run can replay its env to the same state.
        self.episode_index = [0] * len(runs)
        self.episode_actions = [[] for _ in runs]
        self.recent_episodes = [[] for _ in runs]  # (success, return, length) since the last log row
        self.observations = None  # (R, obs) of the episodes in progress
        self.next_actions = None  # (R, act): computed with the last update, for the next env step

    def elapsed(self):
        return self.prior_elapsed + time.time() - self.started

    def close(self):
        self.eval_pool.close()
        if self.online_pool is not None:
            self.online_pool.close()

    # -- checkpointing ------------------------------------------------------------------------------

    def run_state(self, r):
        ring = self.buffer.run(r)
        action_dim = ring.data['actions'].shape[-1]
        return dict(
            agent=serialization.to_state_dict(_select(self.agents, r)),
            step=self.step,
            elapsed=self.elapsed(),
            rows=self.loggers[r].rows,
            online_rows=ring.online_rows(),
            online_count=int(ring.online_count),
            episode_index=self.episode_index[r],
            episode_actions=np.asarray(self.episode_actions[r], np.float32).reshape(-1, action_dim),
            recent_episodes=np.asarray(self.recent_episodes[r], np.float64).reshape(-1, 3),
            next_action=np.zeros((0, action_dim), np.float32)
            if self.next_actions is None
            else self.next_actions[r : r + 1],
        )

    def restore(self, states):
        template = _select(self.agents, 0)
        agents, rings = [], []
        try:
            for r, state in enumerate(states):
                agents.append(serialization.from_state_dict(template, state['agent']))
                rings.append(self.buffer.run(r).restore_online_rows(state['online_rows'], int(state['online_count'])))
                self.episode_index[r] = int(state['episode_index'])
                self.episode_actions[r] = list(state['episode_actions'])
                self.recent_episodes[r] = [tuple(e) for e in state['recent_episodes']]
                self.logger_rows[r] = {k: list(v) for k, v in state['rows'].items()}
            self.step = int(states[0]['step'])
            self.prior_elapsed = float(states[0]['elapsed'])
            pending = [state['next_action'] for state in states]
            if all(len(p) for p in pending):
                self.next_actions = np.concatenate(pending)
        except (KeyError, ValueError, TypeError) as e:
            paths = ', '.join(r.checkpoint_path for r in self.runs)
            raise CheckpointError(f'{paths} does not match this run ({e}); delete it to restart') from None
        self.agents = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *agents)
        self.buffer = self.buffer.with_runs(rings)

    def save(self):
        for r, run in enumerate(self.runs):
            save_checkpoint(run.checkpoint_path, self.run_state(r))

    # -- the phases ---------------------------------------------------------------------------------

    def train(self):
        args = self.args
        total = args.offline_steps + args.online_steps
        periods = (args.log_every, args.eval_every, args.save_every)
        batch_size = self.agents.config.batch_size
        self.log_step, self.log_time = self.step, time.time()
        name = self.runs[0].task.name if len(self.runs) == 1 else f'{len(self.runs)} runs'
        with tqdm(
            total=total, initial=self.step, disable=not args.progress, desc=name, unit='step', dynamic_ncols=True
        ) as bar:
            self.bar = bar
            while self.step < args.offline_steps:
                end = _next_boundary(self.step, args.offline_steps, periods, args.updates_per_call)
                agents, info, finite = offline_chunk(
                    self.agents, self.buffer, self.data_keys, self.step, end - self.step, batch_size
                )
                self._after_chunk(agents, info, finite, end, 'offline')
            if self.step < total:
                self.online_pool = make_env_pool([r.task for r in self.runs])
                self._reset_online_envs(range(len(self.runs)))
            while self.step < total:
                end = _next_boundary(self.step, total, periods, args.online_updates_per_call)
                transitions = self._collect(end - self.step)
                agents, self.buffer, info, finite, next_actions = online_chunk(
                    self.agents,
                    self.buffer,
                    transitions,
                    self.data_keys,
                    self.step,
                    batch_size,
                    jnp.asarray(self.observations),
                    self.act_keys,
                    balanced=args.balanced_sampling,
                )
                self.next_actions = np.asarray(next_actions)  # the one device->host sync of an env step
                self._after_chunk(agents, info, finite, end, 'online')

    def _after_chunk(self, agents, info, finite, end, phase):
        start, args = self.step, self.args
        finite = np.asarray(finite)
        if not finite.all():
            bad_run = int(np.flatnonzero(~finite)[0])
            bad = sorted(k for k, v in info.items() if not np.all(np.isfinite(np.asarray(v)[bad_run])))
            where = f'step {end}' if end - start == 1 else f'steps {start + 1}..{end}'
            checkpoint = self.runs[bad_run].checkpoint_path
            raise NonFiniteError(
                f'non-finite {", ".join(bad) or "metric"} at {where} of {self.runs[bad_run].run_dir}; stopped, '
                f'last good checkpoint kept at {checkpoint if os.path.exists(checkpoint) else "(none yet)"}'
            )
        self.agents, self.step = agents, end
        self.bar.update(end - start)
        if end % args.log_every == 0 or end == args.offline_steps + args.online_steps:
            info = {k: np.asarray(v) for k, v in info.items()}
            # Over the whole logging interval, evaluations and checkpoints included.
            now = time.time()
            steps_per_s = (end - self.log_step) / max(now - self.log_time, 1e-9)
            self.log_step, self.log_time = end, now
            for r, logger in enumerate(self.loggers):
                row = dict(step=end, phase=phase, **{k: float(v[r]) for k, v in info.items()})
                if self.recent_episodes[r]:
                    success, episode_return, length = np.mean(self.recent_episodes[r], axis=0)
                    row.update(
                        online_success=success,
                        online_return=episode_return,
                        online_length=length,
                        online_episodes=self.episode_index[r],
                    )
                    self.recent_episodes[r] = []
                row['steps_per_s'] = steps_per_s
                logger.log('train', row)
        if _is_eval_step(end, args):
            self._evaluate(phase)
        if end % args.save_every == 0 or end in (args.offline_steps, args.offline_steps + args.online_steps):
            self.save()

    def _evaluate(self, phase):
        runs = len(self.runs)

        def act(observations, t):
            grouped = jnp.asarray(observations.reshape(runs, -1, observations.shape[-1]))
            actions = policy_action(self.agents, grouped, self.eval_keys, self.step, t, evaluation=True)
            return np.asarray(actions).reshape(len(observations), -1)

        results = evaluate(self.eval_pool, act, self.args.eval_episodes, [(r.seed, 1, self.step) for r in self.runs])
        for run, logger, result in zip(self.runs, self.loggers, results, strict=True):
            logger.log('eval', dict(step=self.step, phase=phase, **result))
            prefix = '' if runs == 1 else f'{run.task.name} seed {run.seed} '
            self.bar.write(
                f'[{phase}] {prefix}step {self.step}: success {100 * result["success"]:.1f}% '
                f'return {result["episode_return"]:.1f}'
            )

    # -- online interaction -------------------------------------------------------------------------

    def _reset_online_envs(self, which):
        """Puts each run's env where it was: reset with the episode's seed, then replay its actions so far."""
        seeds = [episode_seed(self.runs[r].seed, 2, self.episode_index[r]) for r in which]
        observations = self.online_pool.reset(list(which), seeds, [self.episode_actions[r] for r in which])
        if self.observations is None:
            self.observations = np.stack(observations).astype(np.float32)
        for r, observation in zip(which, observations, strict=True):
            self.observations[r] = observation

    def _collect(self, length):
        """`length` env steps of every run with its current policy; → transitions (R, length, ...)."""
        steps = []
        shift = self.runs[0].task.family.reward_shift
        for i in range(length):
            if self.next_actions is None:
                actions = np.asarray(
                    policy_action(self.agents, jnp.asarray(self.observations), self.act_keys, self.step + i)
                )
            else:
                actions, self.next_actions = self.next_actions, None
            results = self.online_pool.step(actions)
            next_observations = np.stack([res[0] for res in results]).astype(np.float32)
            terminated = np.array([res[2] for res in results])
            truncated = np.array([res[3] for res in results])
            rewards = [res[1] for res in results]
            steps.append(
                make_transition(self.observations, actions, next_observations, rewards, terminated, truncated, shift)
            )
            self.observations = next_observations
            ended = []
            for r, (_, _, _, _, success, episode_return, episode_length) in enumerate(results):
                self.episode_actions[r].append(actions[r])
                if terminated[r] or truncated[r]:
                    self.recent_episodes[r].append((success, episode_return, episode_length))
                    self.episode_index[r] += 1
                    self.episode_actions[r] = []
                    ended.append(r)
            if ended:
                self._reset_online_envs(ended)
        # One transfer call for all; (length, R, ...) -> (R, length, ...).
        return jax.device_put({k: np.stack([s[k] for s in steps], axis=1).astype(np.float32) for k in steps[0]})


# ---------------------------------------------------------------------------------------------------
# Entry point


def main(mode, argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, mode)
        if args.list_tasks:
            print('\n'.join(suite_tasks(args.list_tasks)))
            return 0
        if not args.env:
            raise UserError(f'--env is required, e.g. --env cube-double (list: launch/{mode}.py --list-tasks offline)')
        run(args, mode)
    except (UserError, UnknownTaskError, DatasetError, CheckpointError, RunLockedError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0
