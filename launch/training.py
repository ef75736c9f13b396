"""The training phases of a group of runs (a single run is a group of one), used by launch/loop.py.

Offline: K updates per compiled call (launch/compiled.py) until the next log, evaluation or checkpoint
boundary. O2O: per env step, every run acts, its env copy steps (in parallel worker processes), the
transition is appended to its ring and the run makes one update, which also draws its next action.
Logs, evaluations and checkpoints go into each run's own directory, on chunk boundaries.
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from tqdm import tqdm

from envs.evaluation import evaluate, evaluation_rounds
from envs.factory import make_env_pool
from envs.pool import PoolView
from launch.checkpoint import CheckpointError, save_group_checkpoints
from launch.compiled import offline_chunk, online_chunk, policy_action, signals_held, states_finite
from launch.online_envs import OnlineEnvs
from launch.run_logs import RunFileError
from launch.stops import raise_if_stopped


class NonFiniteError(Exception):
    """Training produced NaN/inf in some runs: `stopped` maps each one's run directory to its message (the
    step and the metrics). Exit code 1."""

    def __init__(self, stopped):
        self.stopped = dict(stopped)
        messages = list(self.stopped.values())
        more = f' (and {len(messages) - 1} other run(s) of the group)' if len(messages) > 1 else ''
        super().__init__(messages[0] + more)


def _next_boundary(step, end, every, k):
    """The next step at which to stop a compiled chunk: a multiple of K or of a logging/eval/save
    period, step 1 (the protocol's first evaluation) or the end of the phase."""
    candidates = [end] + [(step // n + 1) * n for n in (k, *every)]
    if step == 0:
        candidates.append(1)
    return min(c for c in candidates if c > step)


def _ends_a_phase(step, args):
    return step in (args.offline_steps, args.offline_steps + args.online_steps)


def _is_eval_step(step, args):
    return step == 1 or step % args.eval_every == 0 or _ends_a_phase(step, args)


@jax.jit
def _take(tree, indices):
    return jax.tree_util.tree_map(lambda x: x[indices], tree)


@signals_held()
def select_runs(tree, indices):
    """The runs `indices` (a list: a group of them; an int: one run) of a stacked pytree, in one
    compiled call (indexing leaf by leaf costs a dispatch each, seconds for an agent's many leaves)."""
    return _take(tree, np.asarray(indices))


def _same_shapes(template, restored):
    """`restored` if each of its arrays has the shape of the template's (a checkpoint of other network sizes
    restores without complaint, then fails deep in the compiled update), else ValueError naming the first."""
    for (path, want), got in zip(
        jax.tree_util.tree_leaves_with_path(template), jax.tree_util.tree_leaves(restored), strict=True
    ):
        if np.shape(got) != np.shape(want):
            where = jax.tree_util.keystr(path)
            raise ValueError(f"its agent{where} has shape {np.shape(got)}, this run's {np.shape(want)}")
    return restored


def check_run_dirs_kept(runs):
    """Before each write into the run directories. One deleted or replaced while its run trained: logs or a
    checkpoint there, without the settings, would start a folder the rerun refuses or overwrites (a deleted
    one failed at the write, naming the file as if it were a wrong path)."""
    for run in runs:
        if not os.path.exists(os.path.join(run.run_dir, 'config.json')):
            raise RunFileError(
                f'{run.run_dir} lost its config.json while the run trained (its run directory deleted or '
                'replaced?); stopped before writing there: put the run directory back and rerun the same '
                'command to resume, or delete it to train the run again'
            )


class GroupTrainer:
    """Training state of a group of runs at the same step, and the two phases; each run's part of it
    (`run_state`) goes into its own run directory's checkpoint."""

    def __init__(self, args, runs, buffer, agents, keys):
        self.args, self.runs = args, runs
        self.buffer, self.agents = buffer, agents
        self.data_keys, self.act_keys, self.eval_keys = keys[:, 1], keys[:, 2], keys[:, 3]
        self.step = 0
        self.logger_rows, self.wandb_ids, self.loggers = [None] * len(runs), [None] * len(runs), []
        self.prior_elapsed, self.started = 0.0, time.time()
        tasks = {r.task.name: r.task for r in runs}
        copy_tasks, self.eval_rounds = evaluation_rounds(
            [r.task.name for r in runs], runs[0].settings['eval_envs'], args.max_eval_envs
        )
        self.eval_pool = make_env_pool([tasks[name] for name in copy_tasks])
        self.online = OnlineEnvs([r.seed for r in runs], runs[0].task.family.reward_shift)
        self.next_actions = None  # (R, act): computed with the last update, for the next env step

    def elapsed(self):
        return self.prior_elapsed + time.time() - self.started

    def close(self):
        self.eval_pool.close()
        self.online.close()

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
            wandb_id=self.loggers[r].wandb_id or '',  # '' while the run has had no wandb run
            online_rows=online_rows,
            online_count=online_count,
            **self.online.state(r, action_dim),
            next_action=np.zeros((0, action_dim), np.float32)
            if self.next_actions is None
            else self.next_actions[r : r + 1],
        )

    def restore(self, states):
        template = select_runs(self.agents, 0)
        agents = []
        try:
            for r, state in enumerate(states):
                agents.append(_same_shapes(template, serialization.from_state_dict(template, state['agent'])))
                self.buffer = self.buffer.restore_online_rows(r, state['online_rows'], int(state['online_count']))
                self.online.restore(r, state)
                self.logger_rows[r] = {k: list(v) for k, v in state['rows'].items()}
                self.wandb_ids[r] = state.get('wandb_id') or None
            self.step = int(states[0]['step'])
            self.prior_elapsed = float(states[0]['elapsed'])
            pending = [state['next_action'] for state in states]
            if all(len(p) for p in pending):
                self.next_actions = np.concatenate(pending)
        except (KeyError, ValueError, TypeError) as e:
            paths = ', '.join(r.checkpoint_path for r in self.runs)
            raise CheckpointError(f'{paths} does not match this run ({e}); delete it to restart') from None
        self.agents = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *agents)

    def save(self):
        check_run_dirs_kept(self.runs)
        agents = jax.device_get(self.agents)  # one transfer for every run
        states = (self.run_state(r, agents) for r in range(len(self.runs)))  # one at a time in host memory
        save_group_checkpoints([run.checkpoint_path for run in self.runs], self.step, states)

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
                self.online.start(make_env_pool([r.task for r in self.runs]))
            while self.step < total:
                end = _next_boundary(self.step, total, periods, args.online_updates_per_call)
                # One host->device transfer: the new transitions and the observations to act on next.
                transitions, observations = jax.device_put((self._collect(end - self.step), self.online.observations))
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
        raise_if_stopped()  # a stop whose exception Python swallowed (launch/stops.py): before this chunk counts
        start, args = self.step, self.args
        saving = end % args.save_every == 0 or _ends_a_phase(end, args)
        finite = np.asarray(finite) & (np.asarray(states_finite(agents)) if saving else True)
        if not finite.all():
            where = f'step {end}' if end - start == 1 else f'steps {start + 1}..{end}'
            stopped = {}
            for bad_run in np.flatnonzero(~finite):
                bad = sorted(k for k, v in info.items() if not np.all(np.isfinite(np.asarray(v)[bad_run])))
                run = self.runs[bad_run]
                checkpoint = run.checkpoint_path if os.path.exists(run.checkpoint_path) else '(none yet)'
                stopped[run.run_dir] = (
                    f'non-finite {", ".join(bad) or "parameters"} at {where} of {run.run_dir}; stopped, '
                    f'last good checkpoint kept at {checkpoint}'
                )
            raise NonFiniteError(stopped)
        self.agents, self.step = agents, end
        self.bar.update(end - start)
        if end % args.log_every == 0 or _ends_a_phase(end, args):
            check_run_dirs_kept(self.runs)
            info = {k: np.asarray(v) for k, v in info.items()}
            # Over the whole logging interval, evaluations and checkpoints included.
            now = time.time()
            steps_per_s = (end - self.log_step) / max(now - self.log_time, 1e-9)
            self.log_step, self.log_time = end, now
            for r, logger in enumerate(self.loggers):
                row = dict(step=end, phase=phase, **{k: float(v[r]) for k, v in info.items()})
                row.update(self.online.pop_recent(r))
                row['steps_per_s'] = steps_per_s
                logger.log('train', row)
        if _is_eval_step(end, args):
            self._evaluate(phase)
        if saving:
            self.save()

    def _evaluation_policy(self, indices):
        """act(observations, t) for the copies of runs `indices`: one batched policy call."""
        agents, keys = select_runs((self.agents, self.eval_keys), indices)

        def act(observations, t):
            grouped = jnp.asarray(observations.reshape(len(indices), -1, observations.shape[-1]))
            actions = policy_action(agents, grouped, keys, self.step, t, evaluation=True)
            return np.asarray(actions).reshape(len(observations), -1)

        return act

    def _evaluate(self, phase):
        check_run_dirs_kept(self.runs)
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

    def _collect(self, length):
        """`length` env steps of every run with its current policy; → transitions (R, length, ...), on the host."""
        steps = []
        for i in range(length):
            if self.next_actions is None:
                observations = jnp.asarray(self.online.observations)
                actions = np.asarray(policy_action(self.agents, observations, self.act_keys, self.step + i))
            else:
                actions, self.next_actions = self.next_actions, None
            steps.append(self.online.step(actions))
        return {k: np.stack([s[k] for s in steps], axis=1).astype(np.float32) for k in steps[0]}  # (R, length, ...)
