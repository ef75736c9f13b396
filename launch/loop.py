"""The one training loop behind `launch/offline.py` and `launch/o2o.py`.

Command line → task (envs.registry) → data (datasets) → agent (agents) → this loop → run directory.
Updates run K at a time inside one compiled `lax.scan`; the batch of update `i` is drawn with
`fold_in(data_key, i)` and the agent carries its own key, so a seed gives the same run whatever K is.
Logging, evaluation and checkpoints happen on chunk boundaries.
"""

import argparse
import dataclasses
import os
import sys
import time
from importlib import metadata

import jax
import numpy as np
from flax import serialization
from tqdm import tqdm

from agents import AGENTS
from datasets.buffer import TRANSITION_KEYS, ReplayBuffer, default_capacity
from datasets.d4rl_data import BACKENDS, load_d4rl_data
from datasets.generate import DEFAULT_DATASET_DIR
from datasets.ogbench_data import DatasetError, load_task_data
from envs.evaluation import episode_seed, evaluate, final_score
from envs.factory import SUCCESS_TIMING, make_env, make_vector_env, with_backend
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
    p.add_argument('--task', type=int, help="task id 1..5 when --env names a family (default: OGBench's default)")
    agents = sorted(AGENTS) + (['rlpd'] if mode == 'o2o' else [])
    rlpd_help = '; rlpd = sac + --balanced-sampling + --offline-steps 0' if mode == 'o2o' else ''
    p.add_argument('--agent', default='fav', choices=agents, help=f'default: fav{rlpd_help}')
    p.add_argument('--seed', type=int, default=0)
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
    p.add_argument('--run-dir', help=f'default: runs/{mode}/<task>/<agent>/seed<seed>')
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


def _settings(args, task, config, mode):
    return dict(
        mode=mode,
        task=task.name,
        agent=args.agent,
        seed=args.seed,
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


def run(args, mode):
    _validate_args(args)
    try:
        task = with_backend(resolve_task(args.env, args.task), args.backend)
    except ValueError as e:
        if isinstance(e, UnknownTaskError):
            raise
        raise UserError(str(e)) from None
    if task.family.source == 'd4rl' and args.dataset_episodes is not None:
        raise UserError('--dataset-episodes generates OGBench manipulation data; D4RL AntMaze reads its datasets')
    module = agent_module(args.agent)
    try:
        config = module.get_config(task.family, args.agent_overrides, mode=mode)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    settings = _settings(args, task, config, mode)
    run_dir = args.run_dir or os.path.join('runs', mode, task.name, args.agent, f'seed{args.seed}')
    checkpoint_path = os.path.join(run_dir, CHECKPOINT_NAME)
    final_path = os.path.join(run_dir, 'final.json')
    if os.path.exists(os.path.join(run_dir, 'config.json')):
        _check_same_run(run_dir, settings)
        if os.path.exists(final_path):
            print(f'{run_dir} is complete: {final_path}')
            return read_json(final_path)
    elif args.resume:
        raise UserError(f'--resume: {run_dir} holds no run to resume')

    env = make_env(task)  # relabels the dataset; the O2O phase acts in it
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
    offline_rows = len(train_data['observations'])
    if mode == 'offline':
        settings['buffer_capacity'] = offline_rows  # nothing is appended offline
    elif args.buffer_capacity is None:
        settings['buffer_capacity'] = default_capacity(offline_rows)
    elif args.buffer_capacity < max(offline_rows, args.online_updates_per_call):
        raise UserError(
            f'--buffer-capacity {args.buffer_capacity} is smaller than the dataset ({offline_rows} rows) '
            'or --online-updates-per-call; omit it for the default max(2000000, rows + 1)'
        )
    # The run directory appears only once the data is good, so a bad --dataset leaves nothing behind.
    os.makedirs(run_dir, exist_ok=True)
    with run_lock(run_dir):  # one process at a time; another one is refused naming this one
        if os.path.exists(final_path):  # finished by another process while this one loaded the data
            return read_json(final_path)
        checkpoint = load_checkpoint(checkpoint_path) if os.path.exists(checkpoint_path) else None
        write_json(os.path.join(run_dir, 'config.json'), _jsonable(settings))
        buffer = ReplayBuffer.create(train_data, capacity=settings['buffer_capacity'])
        del train_data

        root = jax.random.PRNGKey(args.seed)
        agent_key, data_key, act_key, eval_key = (jax.random.fold_in(root, i) for i in range(4))
        example_obs = buffer.data['observations'][:1]
        agent = module.Agent.create(agent_key, example_obs, buffer.data['actions'][:1], config)

        eval_env = make_vector_env(task, settings['eval_envs'])
        loop = _Loop(args, task, run_dir, env, eval_env, buffer, agent, data_key, act_key, eval_key, checkpoint_path)
        if checkpoint is not None:
            loop.restore(checkpoint)
            print(f'resuming {run_dir} from step {loop.step}')
        loop.logger = RunLogger(run_dir, args.wandb, _jsonable(settings), rows=loop.logger_rows)
        try:
            loop.train()
        finally:
            loop.logger.finish()
            eval_env.close()

        evals = loop.logger.rows['eval']
        final = dict(
            task=task.name,
            agent=args.agent,
            seed=args.seed,
            mode=mode,
            steps=loop.step,
            wall_time_s=round(loop.elapsed(), 1),
        )
        offline_evals = [r['success'] for r in evals if r['phase'] == 'offline']
        online_evals = [r['success'] for r in evals if r['phase'] == 'online']
        if mode == 'offline':
            final['score'] = final_score(offline_evals)
        else:
            final['offline_score'] = final_score(offline_evals) if offline_evals else None
            final['online_score'] = final_score(online_evals) if online_evals else None
            final['score'] = final['online_score']
        write_json(final_path, final)
        print(f'final score {final["score"]:.1f} → {final_path}')
        return final


def env_transition(env, observation, action, reward_shift):
    """One online env step → (the transition to store, the episode's statistics if it just ended, else None).

    `masks` is 0 only on termination: a truncated episode's last value still bootstraps. `terminals`
    marks either end of an episode. Rewards get the family's shift, as the dataset's did.
    """
    next_observation, reward, terminated, truncated, info = env.step(action)
    transition = dict(
        observations=observation,
        actions=action,  # the buffer clips what it stores
        next_observations=next_observation,
        rewards=reward + reward_shift,
        masks=1.0 - float(terminated),
        terminals=float(terminated or truncated),
    )
    episode = info['episode'] if terminated or truncated else None
    return {k: np.asarray(v, np.float32) for k, v in transition.items()}, episode


class _Loop:
    """Training state and the two phases; everything in `state()` goes into the checkpoint."""

    def __init__(self, args, task, run_dir, env, eval_env, buffer, agent, data_key, act_key, eval_key, checkpoint_path):
        self.args, self.task, self.run_dir = args, task, run_dir
        self.env, self.eval_env = env, eval_env
        self.buffer, self.agent = buffer, agent
        self.data_key, self.act_key, self.eval_key = data_key, act_key, eval_key
        self.checkpoint_path = checkpoint_path
        self.step = 0
        self.logger_rows = None
        self.prior_elapsed, self.started = 0.0, time.time()
        # Online interaction: episodes are reset with seeds from their index, and the actions of the
        # episode in progress are kept so a resumed run can replay the env to the same state.
        self.episode_index = 0
        self.episode_actions = []
        self.recent_episodes = []  # (success, return, length) of episodes since the last log row
        self.observation = None

    def elapsed(self):
        return self.prior_elapsed + time.time() - self.started

    # -- checkpointing ------------------------------------------------------------------------------

    def state(self):
        return dict(
            agent=serialization.to_state_dict(self.agent),
            step=self.step,
            elapsed=self.elapsed(),
            rows=self.logger.rows,
            online_rows=self.buffer.online_rows(),
            online_count=int(self.buffer.online_count),
            episode_index=self.episode_index,
            episode_actions=np.asarray(self.episode_actions, np.float32).reshape(
                -1, self.buffer.data['actions'].shape[-1]
            ),
            recent_episodes=np.asarray(self.recent_episodes, np.float64).reshape(-1, 3),
        )

    def restore(self, state):
        try:
            self.agent = serialization.from_state_dict(self.agent, state['agent'])
            self.step = int(state['step'])
            self.prior_elapsed = float(state['elapsed'])
            self.logger_rows = {k: list(v) for k, v in state['rows'].items()}
            self.buffer = self.buffer.restore_online_rows(state['online_rows'], int(state['online_count']))
            self.episode_index = int(state['episode_index'])
            self.episode_actions = list(state['episode_actions'])
            self.recent_episodes = [tuple(r) for r in state['recent_episodes']]
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(
                f'{self.checkpoint_path} does not match this run ({e}); delete it to restart'
            ) from None

    def save(self):
        save_checkpoint(self.checkpoint_path, self.state())

    # -- the phases ---------------------------------------------------------------------------------

    def train(self):
        args = self.args
        total = args.offline_steps + args.online_steps
        periods = (args.log_every, args.eval_every, args.save_every)
        self.log_step, self.log_time = self.step, time.time()
        with tqdm(
            total=total,
            initial=self.step,
            disable=not args.progress,
            desc=self.task.name,
            unit='step',
            dynamic_ncols=True,
        ) as bar:
            self.bar = bar
            while self.step < args.offline_steps:
                end = _next_boundary(self.step, args.offline_steps, periods, args.updates_per_call)
                agent, info, finite = offline_chunk(
                    self.agent, self.buffer, self.data_key, self.step, end - self.step, self.agent.config.batch_size
                )
                self._after_chunk(agent, info, finite, end, 'offline')
            if self.step < total:
                self._reset_online_env()
            while self.step < total:
                end = _next_boundary(self.step, total, periods, args.online_updates_per_call)
                transitions = self._collect(end - self.step)
                agent, self.buffer, info, finite = online_chunk(
                    self.agent,
                    self.buffer,
                    transitions,
                    self.data_key,
                    self.step,
                    self.agent.config.batch_size,
                    balanced=args.balanced_sampling,
                )
                self._after_chunk(agent, info, finite, end, 'online')

    def _after_chunk(self, agent, info, finite, end, phase):
        start, args = self.step, self.args
        if not bool(finite):
            bad = sorted(k for k, v in info.items() if not np.all(np.isfinite(np.asarray(v))))
            where = f'step {end}' if end - start == 1 else f'steps {start + 1}..{end}'
            raise NonFiniteError(
                f'non-finite {", ".join(bad) or "metric"} at {where}; stopped, last good checkpoint kept at '
                f'{self.checkpoint_path if os.path.exists(self.checkpoint_path) else "(none yet)"}'
            )
        self.agent, self.step = agent, end
        self.bar.update(end - start)
        if end % args.log_every == 0 or end == args.offline_steps + args.online_steps:
            row = dict(step=end, phase=phase, **{k: float(v) for k, v in info.items()})
            if self.recent_episodes:
                success, episode_return, length = np.mean(self.recent_episodes, axis=0)
                row.update(
                    online_success=success,
                    online_return=episode_return,
                    online_length=length,
                    online_episodes=self.episode_index,
                )
                self.recent_episodes = []
            # Over the whole logging interval, evaluations and checkpoints included.
            now = time.time()
            row['steps_per_s'] = (end - self.log_step) / max(now - self.log_time, 1e-9)
            self.log_step, self.log_time = end, now
            self.logger.log('train', row)
        if _is_eval_step(end, args):
            self._evaluate(phase)
        if end % args.save_every == 0 or end in (args.offline_steps, args.offline_steps + args.online_steps):
            self.save()

    def _evaluate(self, phase):
        def act(observations, t):
            return np.asarray(policy_action(self.agent, observations, self.eval_key, self.step, t, evaluation=True))

        result = evaluate(self.eval_env, act, self.args.eval_episodes, (self.args.seed, 1, self.step))
        self.logger.log('eval', dict(step=self.step, phase=phase, **result))
        self.bar.write(
            f'[{phase}] step {self.step}: success {100 * result["success"]:.1f}% return {result["episode_return"]:.1f}'
        )

    # -- online interaction -------------------------------------------------------------------------

    def _reset_online_env(self):
        """Puts the env where it was: reset with the episode's seed, then replay its actions so far."""
        self.observation, _ = self.env.reset(seed=episode_seed(self.args.seed, 2, self.episode_index))
        for action in self.episode_actions:
            self.observation, *_ = self.env.step(action)

    def _collect(self, length):
        """`length` env steps with the current policy; returns them stacked for `online_chunk`."""
        out = {k: [] for k in TRANSITION_KEYS}
        for i in range(length):
            action = np.asarray(policy_action(self.agent, self.observation, self.act_key, self.step + i))
            transition, episode = env_transition(self.env, self.observation, action, self.task.family.reward_shift)
            for k, v in transition.items():
                out[k].append(v)
            self.episode_actions.append(action)
            self.observation = transition['next_observations']
            if episode is not None:
                self.recent_episodes.append((episode['success'], float(episode['r']), float(episode['l'])))
                self.episode_index += 1
                self.episode_actions = []
                self._reset_online_env()
        return jax.device_put({k: np.stack(v) for k, v in out.items()})  # one transfer call for all


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
