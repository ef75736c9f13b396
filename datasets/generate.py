"""Regenerates OGBench manipulation "play" datasets locally with OGBench's own scripted plan oracles.

Follows the official collection procedure (OGBench's data_gen_scripts/generate_manipspace.py, 'play'
type) and writes its file format, so `ogbench.utils.load_dataset` and `ogbench.make_env_and_datasets`
read the result unchanged. Each episode is seeded from (seed, split, episode index) alone, so the
data for a seed does not depend on the number of workers, and the first N train episodes are the
same whatever the total. Finished episodes are kept as part files so an interrupted run resumes.

    python -m datasets.generate --env cube-double --episodes 1000 --out DIR
"""

import argparse
import contextlib
import errno
import itertools
import multiprocessing
import os
import pathlib
import re
import shutil
import signal
import sys
import threading
import time
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import tqdm

from datasets.files import atomic_write, nearest_existing, one_writer
from envs import registry
from envs.pool import EnvWorkerError

NOISE = 0.1
NOISE_SMOOTHING = 0.5
DEFAULT_EPISODE_LENGTH = 1001
DEFAULT_DATASET_DIR = '~/.ogbench/data'  # OGBench's own default
_SPLITS = {'train': 0, 'val': 1}
# A dataset is trained from a replay ring of fewer rows (datasets/buffer.py's RING_ROW_LIMIT: int32 counts).
ROW_LIMIT = 2**31
PARENT_CHECK_S = 1  # how often a generation worker checks that its parent is alive


class GenerationError(ValueError):
    """A request that cannot be generated; the message is one line meant for the user."""


def generatable_family(name):
    """The registry Family for a family name, short name or task name, if its data can be generated."""
    family = registry.resolve_task(name).family
    if not family.generatable:
        names = ', '.join(f.short_name for f in registry.FAMILIES.values() if f.generatable)
        raise GenerationError(
            f'{family.name} data cannot be generated locally (only {names}); navigate datasets were '
            'collected by expert policies and need the official OGBench files'
        )
    return family


def generated_dir(dataset_dir, episodes, seed, episode_length=DEFAULT_EPISODE_LENGTH):
    """Where the loader looks for (and puts) a generated dataset of `episodes` episodes."""
    length = '' if episode_length == DEFAULT_EPISODE_LENGTH else f'-len{episode_length}'
    return pathlib.Path(dataset_dir).expanduser() / 'generated' / f'ep{episodes}-seed{seed}{length}'


def is_generated_dir(folder):
    """Whether `folder` is one generated_dir() names."""
    folder = pathlib.Path(folder).expanduser().resolve()  # '.' from inside it, a relative path, a link to it
    return folder.parent.name == 'generated' and re.fullmatch(r'ep\d+-seed\d+(-len\d+)?', folder.name) is not None


def output_paths(family, out_dir):
    """(train, val) paths in OGBench's naming: `<family>-v0.npz` and `<family>-v0-val.npz`."""
    out_dir = pathlib.Path(out_dir).expanduser()
    return out_dir / f'{family.name}-v0.npz', out_dir / f'{family.name}-v0-val.npz'


def check_request(family_name, episodes, seed=0, workers=None, episode_length=DEFAULT_EPISODE_LENGTH, out_dir=None):
    """The Family to generate; raises a one-line ValueError for anything that cannot be generated (into `out_dir`,
    if given: checked before the episodes are collected, not after)."""
    family = generatable_family(family_name)
    for path in output_paths(family, out_dir) if out_dir is not None else ():
        if path.is_dir():
            raise GenerationError(f'{path} is a folder where the dataset file goes: move it away, or write elsewhere')
    if episodes < 1:
        raise GenerationError(f'--episodes must be at least 1, got {episodes}')
    if episode_length < 2:
        raise GenerationError(f'--episode-length must be at least 2, got {episode_length}')
    if episodes * episode_length >= ROW_LIMIT:  # refused before its list of episodes fills the memory
        raise GenerationError(
            f'{episodes} episodes of {episode_length} steps are {episodes * episode_length} rows; a dataset trains '
            f'from fewer than {ROW_LIMIT} (its replay ring counts rows in int32): ask for fewer or shorter episodes'
        )
    if seed < 0:
        raise GenerationError(f'--seed must be non-negative, got {seed}')
    if workers is not None and workers < 1:
        raise GenerationError(f'--workers must be at least 1, got {workers}')
    return family


def _episode_seed(seed, split, index, attempt):
    return int(np.random.SeedSequence([seed, _SPLITS[split], index, attempt]).generate_state(1)[0])


# One collection env (and its oracles) per worker process, reused across its episodes: building the
# MuJoCo model is the slow part of a reset, and a seeded reset fully re-initialises the episode.
_COLLECTORS = {}


def _collector(family, episode_length):
    key = (family.name, episode_length)
    if key not in _COLLECTORS:
        import gymnasium
        import ogbench  # noqa: F401  (registers the OGBench gymnasium ids)
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        env = gymnasium.make(
            family.env_name, terminate_at_goal=False, mode='data_collection', max_episode_steps=episode_length
        )
        kwargs = dict(env=env, noise=NOISE, noise_smoothing=NOISE_SMOOTHING)
        if family.short_name.startswith('cube'):
            agents = {'cube': CubePlanOracle(**kwargs)}
        elif family.short_name == 'scene':
            agents = {
                'cube': CubePlanOracle(**kwargs),
                'button': ButtonPlanOracle(**kwargs),
                'drawer': DrawerPlanOracle(**kwargs),
                'window': WindowPlanOracle(**kwargs),
            }
        else:
            agents = {'button': ButtonPlanOracle(gripper_always_closed=True, **kwargs)}
        _COLLECTORS[key] = env, agents
    return _COLLECTORS[key]


def _run_episode(family, episode_length, episode_seed):
    """One play episode in the official file layout (one row per env step)."""
    env, agents = _collector(family, episode_length)
    # The oracles draw from the global numpy generator, the env from its own: seed both.
    np.random.seed(episode_seed)
    ob, info = env.reset(seed=episode_seed)
    if family.short_name == 'cube-single':
        p_stack = 0.0
    elif family.short_name == 'cube-double':
        p_stack = np.random.uniform(0.0, 0.25)
    else:
        p_stack = 0.5
    agent = agents[info['privileged/target_task']]
    agent.reset(ob, info)
    has_buttons = hasattr(env.unwrapped, '_cur_button_states')
    rows = {k: [] for k in ['observations', 'actions', 'terminals', 'qpos', 'qvel']}
    if has_buttons:
        rows['button_states'] = []
    done = False
    while not done:
        action = np.clip(np.array(agent.select_action(ob, info)), -1, 1)
        next_ob, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        if agent.done:
            agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
            agent = agents[agent_info['privileged/target_task']]
            agent.reset(agent_ob, agent_info)
        rows['observations'].append(ob)
        rows['actions'].append(action)
        rows['terminals'].append(done)
        rows['qpos'].append(info['prev_qpos'])
        rows['qvel'].append(info['prev_qvel'])
        if has_buttons:
            rows['button_states'].append(info['prev_button_states'])
        ob = next_ob
    dtypes = dict(terminals=bool, button_states=np.int64)
    return {k: np.array(v, dtype=dtypes.get(k, np.float32)) for k, v in rows.items()}


def _healthy(family, episode):
    """Scene only: the official check that the block stays visible unless it is in the drawer."""
    if family.short_name != 'scene':
        return True
    y, z = episode['qpos'][:, 15], episode['qpos'][:, 16]
    return not ((y >= 0.29).any() or ((y <= -0.3) & ((z < 0.06) | (z > 0.08))).any())


def _collect(family, episode_length, seed, split, index):
    for attempt in itertools.count():
        episode = _run_episode(family, episode_length, _episode_seed(seed, split, index, attempt))
        if _healthy(family, episode):
            return episode


def _atomic_savez(path, arrays):
    """Writes an .npz so that `path` either does not exist or holds the complete file."""
    with atomic_write(path) as f:  # a file object, so numpy does not append '.npz' to the temp name
        np.savez_compressed(f, **arrays)


def _work(job):
    """Collects one episode and saves it as its part file; returns its number of env steps."""
    family_name, episode_length, seed, split, index, part = job
    family = registry.FAMILIES[family_name]
    episode = _collect(family, episode_length, seed, split, index)
    _atomic_savez(pathlib.Path(part), episode)
    return len(episode['terminals'])


def default_workers():
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def generate_dataset(
    family_name, out_dir, episodes, seed=0, workers=None, episode_length=DEFAULT_EPISODE_LENGTH, progress=True
):
    """Writes `<out_dir>/<family>-v0.npz` (`episodes` episodes) and `-val.npz` (max(1, episodes // 10)).

    Returns (train_path, val_path) as strings. Parts of an interrupted run with the same seed and
    episode length are reused; the train file appears last, so its presence means the pair is complete.
    """
    family = check_request(family_name, episodes, seed, workers, episode_length, out_dir)
    workers = default_workers() if workers is None else workers
    train_path, val_path = output_paths(family, out_dir)
    # Jobs of a sweep may all find the same dataset missing: one generates it, the others wait for it.
    with one_writer(train_path, 'is generating') as waited:
        if not (waited and train_path.is_file() and val_path.is_file()):
            _write_pair(family, train_path, val_path, episodes, seed, workers, episode_length, progress)
    return str(train_path), str(val_path)


def _write_pair(family, train_path, val_path, episodes, seed, workers, episode_length, progress):
    parts_root = train_path.parent / f'.{train_path.stem}.parts'
    parts_dir = parts_root / f'seed{seed}-len{episode_length}'
    parts_dir.mkdir(parents=True, exist_ok=True)
    counts = {'train': episodes, 'val': max(1, episodes // 10)}
    parts = {split: [parts_dir / f'{split}-{i:06d}.npz' for i in range(n)] for split, n in counts.items()}
    # Parts are renamed into place only once complete, so an existing part is a finished episode.
    jobs = [
        (family.name, episode_length, seed, split, i, str(part))
        for split, paths in parts.items()
        for i, part in enumerate(paths)
        if not part.exists()
    ]

    total = sum(counts.values())
    bar = tqdm.tqdm(
        total=total * episode_length,
        initial=(total - len(jobs)) * episode_length,
        unit='step',
        unit_scale=True,
        desc=train_path.stem,
        disable=not progress,
    )
    with bar:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                bar.update(_work(job))
        else:
            _generate_in_workers(jobs, workers, bar)

    splits = {split: _concatenate(paths) for split, paths in parts.items()}
    # Drop an older train file first: from here until the new one is renamed in, no train file
    # exists, so a pair left by a kill is never read as complete.
    train_path.unlink(missing_ok=True)
    _atomic_savez(val_path, splits['val'])
    _atomic_savez(train_path, splits['train'])
    shutil.rmtree(parts_dir)
    if not any(parts_root.iterdir()):
        parts_root.rmdir()


def _generate_in_workers(jobs, workers, bar):
    """Runs the jobs in worker processes. concurrent.futures' pool, not multiprocessing's: a worker killed while
    it waited for work (holding the task queue's lock) made multiprocessing's pool hang at its exit, without a
    word; this one reports any killed worker (BrokenProcessPool), which is an EnvWorkerError here."""
    # A fresh interpreter per worker: forking a process that holds MuJoCo or JAX state is unsafe.
    context = multiprocessing.get_context('spawn')
    others = set(multiprocessing.active_children())
    try:
        with ProcessPoolExecutor(
            min(workers, len(jobs)), mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)
        ) as pool:
            try:
                futures = [pool.submit(_work, job) for job in jobs]
                for future in as_completed(futures):
                    bar.update(future.result())
            except BaseException:
                # Ended at once, not after the episodes already running; SIGCONT too, as a stopped worker
                # (SIGSTOP) would never take its SIGTERM, and the pool's exit waits for every worker to end.
                pool.shutdown(wait=False, cancel_futures=True)
                for worker in set(multiprocessing.active_children()) - others:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGTERM)
                        os.kill(worker.pid, signal.SIGCONT)
                raise
    except BrokenProcessPool:
        raise EnvWorkerError('a dataset generation worker process exited (killed, or out of memory?)') from None


def _start_worker(parent_pid):
    # Ctrl-C reaches the whole process group: the parent stops, and its error path stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent that dies without that path (SIGKILL, or a SIGTERM the command line does not handle) would leave its
    # workers waiting for work forever: each one ends once its parent is gone.
    threading.Thread(target=_end_with_parent, args=(parent_pid,), daemon=True).start()


def _end_with_parent(parent_pid):
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


# What reading a truncated or corrupt .npz raises (numpy, its zip and zlib readers, the file system).
NPZ_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError)


def one_line(error):
    return ' '.join(str(error).split()) or type(error).__name__


def _concatenate(paths):
    episodes = []
    for path in paths:
        try:
            with np.load(path) as f:
                episodes.append({k: f[k] for k in f.files})
        except NPZ_READ_ERRORS as e:  # a disk's fault: parts are written atomically
            raise GenerationError(
                f'part file {path} is damaged ({one_line(e)}): delete it, then rerun the same command to collect that '
                'episode again'
            ) from None
    return {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m datasets.generate', description=__doc__.split('\n\n')[0])
    parser.add_argument('--env', required=True, help='generatable family, e.g. cube-single or cube-double-play')
    parser.add_argument(
        '--episodes', type=int, default=1000, help='train episodes (val gets a tenth, at least 1; default 1000)'
    )
    parser.add_argument(
        '--out', default=None, help=f'output directory (default {DEFAULT_DATASET_DIR}/generated/ep<N>-seed<S>)'
    )
    parser.add_argument('--seed', type=int, default=0, help="seeds each episode's oracle and env (default 0)")
    parser.add_argument('--workers', type=int, default=None, help='processes (default: all cores)')
    parser.add_argument(
        '--episode-length',
        type=int,
        default=DEFAULT_EPISODE_LENGTH,
        help=f'env steps per episode (default {DEFAULT_EPISODE_LENGTH})',
    )
    # A mistake is one line, as on the launch/ command lines, not argparse's usage block.
    parser.error = lambda message: parser.exit(2, f'error: {message} (see python -m datasets.generate --help)\n')
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        out = generated_dir(DEFAULT_DATASET_DIR, args.episodes, args.seed, args.episode_length)
    try:
        if out == '':  # not read as 'not given': that would write into the default place
            raise GenerationError('--out is empty: give a folder, or leave --out out for the default')
        check_request(args.env, args.episodes, args.seed, args.workers, args.episode_length, out)
    except ValueError as e:  # GenerationError and the registry's UnknownTaskError
        print(f'error: {e}', file=sys.stderr)
        return 2
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:  # a file in the way, no permission, a read-only or missing mount
        in_the_way = nearest_existing(out)
        why = e.strerror if os.path.isdir(in_the_way) else f'{in_the_way} is a file'
        print(f'error: --out {out}: {why}; pass a folder that can be created', file=sys.stderr)
        return 2
    try:
        paths = generate_dataset(
            args.env, out, args.episodes, seed=args.seed, workers=args.workers, episode_length=args.episode_length
        )
    except KeyboardInterrupt:  # Ctrl-C: one line, as the launch/ command lines stop (it was a traceback per process)
        print('interrupted: rerun the same command to go on from its finished episodes', file=sys.stderr)
        return 130
    except EnvWorkerError as e:
        print(f'error: {e}; rerun the same command to go on from its finished episodes', file=sys.stderr)
        return 1
    except GenerationError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, or --out's folder removed meanwhile: atomic_write names the file
        if e.filename is None:
            raise
        what_to_do = 'free some space there' if e.errno in (errno.ENOSPC, errno.EDQUOT) else 'check --out'
        print(
            f'error: {e.filename}: {e.strerror}; {what_to_do}, then rerun the same command to go on from its '
            'finished episodes',
            file=sys.stderr,
        )
        return 1
    print('\n'.join(paths))
    return 0


if __name__ == '__main__':
    sys.exit(main())
