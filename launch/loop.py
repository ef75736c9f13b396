"""The one training loop behind `launch/offline.py` and `launch/o2o.py`.

Command line, tasks, seeds and run directories (launch/settings.py) → data (datasets) → agents
(agents) → this loop → run directories. Every run trains in a group (a single run is a group of one):
the group's agents are stacked and updated K at a time inside one compiled, `vmap`-ed `lax.scan`; the
batch of update `i` of a run is drawn with `fold_in(data_key, i)` from its seed and each agent carries
its own key, so a seed gives the same run whatever K is and whatever group it is in. Logging,
evaluation and checkpoints happen on chunk boundaries, into each run's own directory.
"""

import contextlib
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from tqdm import tqdm

from datasets.buffer import LABEL_KEYS, GroupBuffer, default_capacity
from datasets.d4rl_data import load_d4rl_data
from datasets.ogbench_data import DatasetError, load_task_data
from envs.evaluation import episode_seed, evaluate, evaluation_rounds, final_score
from envs.factory import make_env, make_env_pool, with_backend
from envs.pool import PoolView
from envs.registry import UnknownTaskError, suite_tasks
from launch.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from launch.compiled import offline_chunk, online_chunk, policy_action
from launch.run_lock import RunLockedError, run_lock
from launch.run_logs import RunLogger, read_json, write_json
from launch.settings import (
    UserError,
    agent_module,
    jsonable,
    parse_args,
    parse_seeds,
    plan_runs,
    resolve_tasks,
    validate_args,
)


class NonFiniteError(Exception):
    """Training produced NaN/inf: reported with the step and metric, exit code 1."""


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


@jax.jit
def _take(tree, indices):
    return jax.tree_util.tree_map(lambda x: x[indices], tree)


def _select(tree, indices):
    """The runs `indices` (a list: a group of them; an int: one run) of a stacked pytree, in one
    compiled call (indexing leaf by leaf costs a dispatch each, seconds for an agent's many leaves)."""
    return _take(tree, np.asarray(indices))


def run(args, mode):
    validate_args(args)
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
    runs = plan_runs(args, mode, tasks, seeds, config)
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
        write_json(os.path.join(r.run_dir, 'config.json'), jsonable(r.settings))
    buffer = GroupBuffer.create(dataset, labels, [r.task_index for r in todo], capacity)
    keys = jnp.stack([jnp.stack(_run_keys(r.seed)) for r in todo])  # (R, 4, 2)
    example = (buffer.runs.data['observations'][0, :1], buffer.runs.data['actions'][0, :1])
    agents = jax.jit(jax.vmap(lambda key: module.Agent.create(key, *example, config)))(keys[:, 0])
    # Runs resume from their own checkpoints; runs at different steps (a kill between two runs'
    # saves) train as separate groups, the ones behind first.
    steps = [0 if c is None else int(c.get('step', 0)) for c in checkpoints]
    for step in sorted(set(steps)):
        members = [i for i, s in enumerate(steps) if s == step]
        if len(members) < len(todo):
            group = (buffer.select_runs(members), *_select((agents, keys), members))
        else:  # the common case: no copies of the buffers
            group = (buffer, agents, keys)
        loop = _Loop(args, [todo[i] for i in members], *group)
        if step:
            loop.restore([checkpoints[i] for i in members])
            print(f'resuming {", ".join(r.run_dir for r in loop.runs)} from step {loop.step}')
        loop.loggers = [
            RunLogger(r.run_dir, args.wandb, jsonable(r.settings), rows=rows)
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
        tasks = {r.task.name: r.task for r in runs}
        copy_tasks, self.eval_rounds = evaluation_rounds(
            [r.task.name for r in runs], runs[0].settings['eval_envs'], args.max_eval_envs
        )
        self.eval_pool = make_env_pool([tasks[name] for name in copy_tasks])
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

    def run_state(self, r, agents):
        """Run r's checkpoint; `agents`: the group's agents on the host."""
        action_dim = self.buffer.runs.data['actions'].shape[-1]
        online_rows, online_count = self.buffer.online_rows(r)
        return dict(
            agent=serialization.to_state_dict(jax.tree_util.tree_map(lambda x: x[r], agents)),
            step=self.step,
            elapsed=self.elapsed(),
            rows=self.loggers[r].rows,
            online_rows=online_rows,
            online_count=online_count,
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
        agents = jax.device_get(self.agents)  # one transfer for every run
        for r, run in enumerate(self.runs):
            save_checkpoint(run.checkpoint_path, self.run_state(r, agents))

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
                # One host->device transfer: the new transitions and the observations to act on next.
                transitions, observations = jax.device_put((self._collect(end - self.step), self.observations))
                agents, self.buffer, info, finite, next_actions = online_chunk(
                    self.agents,
                    self.buffer,
                    transitions,
                    self.data_keys,
                    self.step,
                    batch_size,
                    observations,
                    self.act_keys,
                    balanced=args.balanced_sampling,
                )
                # The one device->host transfer of an env step: the next actions and the finite flags.
                self.next_actions, finite = jax.device_get((next_actions, finite))
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

    def _evaluation_policy(self, indices):
        """act(observations, t) for the copies of runs `indices`: one batched policy call."""
        agents, keys = _select((self.agents, self.eval_keys), indices)

        def act(observations, t):
            grouped = jnp.asarray(observations.reshape(len(indices), -1, observations.shape[-1]))
            actions = policy_action(agents, grouped, keys, self.step, t, evaluation=True)
            return np.asarray(actions).reshape(len(observations), -1)

        return act

    def _evaluate(self, phase):
        runs = len(self.runs)
        results = [None] * runs
        for indices, copies in self.eval_rounds:
            act = self._evaluation_policy(indices)
            seed_keys = [(self.runs[r].seed, 1, self.step) for r in indices]
            pool = PoolView(self.eval_pool, copies)
            for r, result in zip(indices, evaluate(pool, act, self.args.eval_episodes, seed_keys), strict=True):
                results[r] = result
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
        """`length` env steps of every run with its current policy; → transitions (R, length, ...), on the host."""
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
        return {k: np.stack([s[k] for s in steps], axis=1).astype(np.float32) for k in steps[0]}  # (R, length, ...)


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
