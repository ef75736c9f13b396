"""The one training loop behind `launch/offline.py` and `launch/o2o.py`: runs, data and run directories.

Command line (launch/settings.py) → tasks, seeds and run directories (launch/run_plan.py) → data
(datasets) → agents (agents) → the training phases (launch/training.py) → each run's final.json.
Every run trains in a group (a single run is a group of one): this module plans the group's runs, skips
the finished ones, holds their run directories' locks, loads the dataset once, creates the stacked agents
from each run's seed and resumes each run from its own checkpoint. A seed gives the same run whatever group it is in:
its keys come from its seed alone, and update `i` draws its batch with `fold_in(data_key, i)`.
"""

import contextlib
import errno
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from datasets.buffer import LABEL_KEYS, GroupBuffer, default_capacity
from datasets.d4rl_data import load_d4rl_data
from datasets.ogbench_data import DatasetError, find_task_file, load_task_data
from envs.evaluation import final_score
from envs.factory import make_env, with_backend
from envs.pool import EnvWorkerError
from envs.registry import UnknownTaskError, suite_tasks
from launch.checkpoint import CheckpointError, load_group_checkpoints
from launch.command_line import UserError, first_line, out_of_memory, print_to_a_pipe
from launch.compiled import signals_held
from launch.run_lock import RunLockedError, run_lock
from launch.run_logs import STOPPED_NAME, RunFileError, RunLogger, read_json, write_json
from launch.run_plan import (
    check_same_run,
    code_version,
    jsonable,
    keeps_progress,
    parse_seeds,
    plan_runs,
    resolve_tasks,
)
from launch.settings import agent_config, agent_module, parse_args, validate_args
from launch.stops import how_it_stopped, raise_if_stopped, stops_raised
from launch.training import GroupTrainer, NonFiniteError, select_runs


def _load_group_data(args, tasks):
    """The dataset's transitions once (without LABEL_KEYS), each task's reward/mask relabeling, and the
    data's origin ('official', 'regenerated', 'generated', 'given' (see find_task_file) or 'minari')."""
    dataset, labels = None, {k: [] for k in LABEL_KEYS}
    for task in tasks:
        env = make_env(task)  # reads the task's goal to relabel the dataset
        try:
            if task.family.source == 'd4rl':
                train_data = load_d4rl_data(task, env, dataset_path=args.dataset, dataset_dir=args.dataset_dir)
                # Minari's AntMaze data (found, downloaded or given) was re-collected: not D4RL's files.
                origin = 'minari' if task.backend == 'minari' else ('given' if args.dataset else 'official')
            else:
                path, origin = find_task_file(
                    task, args.dataset, args.dataset_dir, args.dataset_episodes, 0, args.workers, args.progress
                )
                train_data, _ = load_task_data(task, env, dataset_path=path)
        finally:
            env.close()
        if dataset is None:
            dataset = {k: v for k, v in train_data.items() if k not in LABEL_KEYS}
        for k in LABEL_KEYS:
            labels[k].append(train_data[k])
        del train_data
    return dataset, {k: np.stack(v) for k, v in labels.items()}, origin


def _run_keys(seed):
    """A run's (agent, data, act, eval) keys, from its seed alone: the same in any group."""
    root = jax.random.PRNGKey(seed)
    return [jax.random.fold_in(root, i) for i in range(4)]


def plan(args, mode):
    """What a parsed command line asks for: (tasks, agent config, runs). A run directory that already
    holds a run, finished or not, is checked against its settings here, before anything is loaded or
    written (launch/sweep.py checks its jobs' runs with this too)."""
    validate_args(args, mode)
    seeds = parse_seeds(args)
    try:
        tasks = [with_backend(task, args.backend) for task in resolve_tasks(args)]
    except ValueError as e:
        if isinstance(e, UnknownTaskError):
            raise
        raise UserError(str(e)) from None
    config = agent_config(args, mode, tasks[0].family)
    return tasks, config, plan_runs(args, mode, tasks, seeds, config)


def run(args, mode):
    tasks, config, runs = plan(args, mode)
    module = agent_module(args.agent)
    finals, stopped = {}, {}
    todo = _not_done(runs, finals, stopped, say=True)
    if todo:
        _train_unfinished(args, mode, module, config, tasks, todo, finals, stopped)
    if stopped:
        raise NonFiniteError(stopped)
    return [finals[r.run_dir] for r in runs]


def _not_done(runs, finals, stopped, say=False):
    """The runs left to train; records the finished ones' final.json in `finals` and the stopped ones'
    message (STOPPED_NAME) in `stopped`."""
    for run in runs:
        final_path, stopped_path = (os.path.join(run.run_dir, name) for name in ('final.json', STOPPED_NAME))
        if os.path.exists(final_path):
            finals[run.run_dir] = read_json(final_path)
            if say:
                print(f'{run.run_dir} is complete: {final_path}')
        elif os.path.exists(stopped_path):
            stopped[run.run_dir] = str(read_json(stopped_path).get('error', 'stopped'))  # a hand-edited one: any JSON
            if say:
                print(f'{run.run_dir} stopped earlier on non-finite values; delete {stopped_path} to train it again')
    return [r for r in runs if r.run_dir not in finals and r.run_dir not in stopped]


def _train_unfinished(args, mode, module, config, tasks, todo, finals, stopped):
    """Loads the data, takes the runs' locks and trains them, recording each one's final.json in `finals`.
    A run that produces non-finite values stops (its last good checkpoint kept, STOPPED_NAME written, its
    message in `stopped`), and the other runs of its group go on from their own checkpoints."""
    dataset, labels, origin = _load_group_data(args, tasks)
    capacity = _buffer_capacity(args, mode, len(dataset['observations']))
    for r in todo:
        r.settings.update(buffer_capacity=capacity, dataset_origin=origin)
        config_path = os.path.join(r.run_dir, 'config.json')
        if os.path.exists(config_path) and keeps_progress(r.run_dir):  # a resumed run goes on with the same data
            check_same_run(r.run_dir, r.settings)
            # config.json keeps the code the run started with; final.json records the code that finished it.
            started_with = read_json(config_path).get('code_version')
            if started_with != r.settings['code_version']:
                print(f'note: {r.run_dir} started with code {started_with}, goes on with {code_version()}')
            r.settings['code_version'] = started_with
    # Run directories appear only once the data is good, so a bad --dataset leaves nothing behind.
    for r in todo:
        os.makedirs(r.run_dir, exist_ok=True)
    with contextlib.ExitStack() as locks:
        for r in todo:  # one process per run directory; another one is refused naming the holder
            locks.enter_context(run_lock(r.run_dir))
        todo = _not_done(todo, finals, stopped)  # some may have ended in another process meanwhile
        while todo:
            try:
                _train_group(args, mode, module, config, todo, dataset, labels, capacity, finals)
                break
            except NonFiniteError as e:
                for run_dir, message in e.stopped.items():
                    write_json(os.path.join(run_dir, STOPPED_NAME), dict(error=message))
                stopped.update(e.stopped)
                todo = [r for r in todo if r.run_dir not in finals and r.run_dir not in stopped]
                if todo:
                    print(f'error: {e}; the {len(todo)} other run(s) go on from their checkpoints', file=sys.stderr)


def _buffer_capacity(args, mode, offline_rows):
    """The rows of each run's replay ring: the dataset offline, else --buffer-capacity or the default."""
    if mode == 'offline':
        return offline_rows  # nothing is appended offline
    if args.buffer_capacity is not None and args.buffer_capacity < offline_rows:
        default = 'rows + 2000000' if args.balanced_sampling else 'max(2000000, rows + 1)'
        raise UserError(
            f'--buffer-capacity {args.buffer_capacity} is smaller than the dataset ({offline_rows} rows); '
            f'give at least {offline_rows}, or omit it for the default {default}'
        )
    capacity = (
        default_capacity(offline_rows, args.balanced_sampling) if args.buffer_capacity is None else args.buffer_capacity
    )
    # The ring takes a call's transitions at once; a call ends by the end of the phase and at every period.
    appended = min(args.online_updates_per_call, args.online_steps, args.log_every, args.eval_every, args.save_every)
    if appended > capacity:
        raise UserError(
            f'--online-updates-per-call {args.online_updates_per_call} appends up to {appended} transitions at once, '
            f"more than the ring's {capacity} rows; give a smaller --online-updates-per-call or a larger "
            '--buffer-capacity'
        )
    return capacity


def _train_group(args, mode, module, config, todo, dataset, labels, capacity, finals):
    """Trains the runs `todo` (their locks held) and records their final.json in `finals`."""
    checkpoints = load_group_checkpoints([r.checkpoint_path for r in todo])
    with signals_held():  # compiles
        buffer = GroupBuffer.create(dataset, labels, [r.task_index for r in todo], capacity)
        keys = jnp.stack([jnp.stack(_run_keys(r.seed)) for r in todo])  # (R, 4, 2)
        example = (buffer.runs.data['observations'][0, :1], buffer.runs.data['actions'][0, :1])
        agents = jax.jit(jax.vmap(lambda key: module.Agent.create(key, *example, config)))(keys[:, 0])
    # Only once they exist (allocation errors surface when the arrays are waited for): a group that did
    # not fit in memory leaves no config.json to refuse a smaller rerun.
    jax.block_until_ready((buffer, agents))
    for r in todo:
        write_json(os.path.join(r.run_dir, 'config.json'), jsonable(r.settings))
    # Runs resume from their own checkpoints; runs at different steps (runs saved apart, in other
    # groups) train as separate groups, the ones behind first.
    steps = [0 if c is None else int(c.get('step', 0)) for c in checkpoints]
    for step in sorted(set(steps)):
        members = [i for i, s in enumerate(steps) if s == step]
        if len(members) < len(todo):
            group = (buffer.select_runs(members), *select_runs((agents, keys), members))
        else:  # the common case: no copies of the buffers
            group = (buffer, agents, keys)
        trainer = GroupTrainer(args, [todo[i] for i in members], *group)
        try:  # the env workers are closed however this ends
            if step:
                with signals_held():  # it compiles (the stacks, the rings' writes)
                    trainer.restore([checkpoints[i] for i in members])
                print(f'resuming {", ".join(r.run_dir for r in trainer.runs)} from step {trainer.step}')
            for i in members:
                checkpoints[i] = None  # restored: not kept in host memory for the rest of the run
            for r, rows, wandb_id in zip(trainer.runs, trainer.logger_rows, trainer.wandb_ids, strict=True):
                trainer.loggers.append(
                    RunLogger(
                        r.run_dir, args.wandb, jsonable(r.settings), rows, alone=len(members) == 1, wandb_id=wandb_id
                    )
                )
            trainer.train()
        finally:
            for logger in trainer.loggers:
                logger.finish()
            trainer.close()
        for r, logger in zip(trainer.runs, trainer.loggers, strict=True):
            finals[r.run_dir] = _write_final(r, mode, logger.rows['eval'], trainer.step, trainer.elapsed())


def _write_final(run, mode, evals, steps, elapsed):
    final = dict(
        task=run.task.name,
        agent=run.settings['agent'],
        seed=run.seed,
        mode=mode,
        steps=steps,
        wall_time_s=round(elapsed, 1),
        code_version=code_version(),
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


# ---------------------------------------------------------------------------------------------------
# Entry point


# Where an interrupted command goes on from: it may have stopped while generating the dataset, before any run.
RERUN_TO_GO_ON = (
    'rerun the same command to go on (runs resume from their last checkpoint, a dataset being generated from its '
    'finished episodes)'
)


def main(mode, argv=None):
    with stops_raised():
        return _main(mode, argv)


def _main(mode, argv):
    try:
        raise_if_stopped()  # a Ctrl-C or SIGTERM that came while the entry point imported JAX
        args = parse_args(sys.argv[1:] if argv is None else argv, mode)
        if args.list_tasks:
            print_to_a_pipe('\n'.join(suite_tasks(args.list_tasks)))
            return 0
        if not args.env:
            raise UserError(f'--env is required, e.g. --env cube-double (list: launch/{mode}.py --list-tasks offline)')
        run(args, mode)
    except (UserError, UnknownTaskError, DatasetError, CheckpointError, RunLockedError, RunFileError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except EnvWorkerError as e:
        print(f'error: {e}; {RERUN_TO_GO_ON}', file=sys.stderr)  # an env worker, or a dataset generation's
        return 1
    except OSError as e:  # a file or folder that cannot be made or written (a path the user gave, a full disk)
        if e.filename is None:
            raise
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # not a wrong path: the work so far is kept, and goes on
            print(f'error: {e.filename}: {e.strerror}; free some space there, then {RERUN_TO_GO_ON}', file=sys.stderr)
            return 1
        print(f'error: {e.filename}: {e.strerror}; check the run, runs and dataset paths given', file=sys.stderr)
        return 2
    except (jax.errors.JaxRuntimeError, MemoryError) as e:
        if not out_of_memory(e):
            raise
        smaller = '--agent.batch_size or --agent.hidden_dims' + (', or --buffer-capacity' if mode == 'o2o' else '')
        print(
            f'error: out of memory ({first_line(e)}); train fewer runs at once (--seeds, --task all) or give a '
            f'smaller {smaller}; a rerun resumes each run from its last checkpoint',
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as e:
        stopped, code = how_it_stopped(e)
        print(f'{stopped}: {RERUN_TO_GO_ON}', file=sys.stderr)
        return code
    return 0
