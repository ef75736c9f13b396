"""A task's offline data, read and relabelled by OGBench's own loader.

Files are looked for locally first (an explicit path, a generated dataset, or the official file in
the dataset directory); the official file is downloaded when missing, and when that fails the
manipulation play datasets are regenerated locally (README, 'Data'). Every file is checked before
OGBench reads it, so a truncated or foreign file fails with a message naming it.
"""

import http.client
import os
import socket
import sys
import zipfile
import zlib

import numpy as np

from datasets import generate
from datasets.buffer import ACTION_CLIP, TRANSITION_KEYS
from datasets.files import one_writer

DOWNLOAD_TIMEOUT_S = 30
OFFICIAL_EPISODES = 1000
EPISODE_LENGTH = generate.DEFAULT_EPISODE_LENGTH  # generated files use the official episode length
_FILE_KEYS = ('observations', 'actions', 'terminals', 'qpos', 'qvel')


class DatasetError(Exception):
    """A dataset that cannot be found or used; the message is one line meant for the user."""


def _one_line(error):
    return ' '.join(str(error).split()) or type(error).__name__


def val_path(train_path):
    """The validation file OGBench reads beside `train_path` (it replaces '.npz' with '-val.npz')."""
    return train_path.replace('.npz', '-val.npz')


def _complete(train_path):
    return os.path.isfile(train_path) and os.path.isfile(val_path(train_path))


def given_dataset_path(dataset_path):
    """The absolute path of a --dataset file, once it and its -val file are known to exist."""
    path = os.path.abspath(os.path.expanduser(dataset_path))
    if os.path.isdir(path):
        raise DatasetError(
            f'--dataset {path} is a folder: pass its train .npz file (the -val file is read beside it), or pass '
            f'the folder as --dataset-dir'
        )
    if not path.endswith('.npz'):
        raise DatasetError(f'dataset file {path} must end in .npz (its validation file is read as <name>-val.npz)')
    for p in (path, val_path(path)):
        if not os.path.isfile(p):
            raise DatasetError(f'dataset file {p} ' + ('is a folder' if os.path.isdir(p) else 'does not exist'))
    return path


def _generated_path(task, dataset_dir, episodes, seed, workers, progress=True):
    try:
        family = generate.check_request(task.family.name, episodes, seed, workers)
    except ValueError as e:
        raise DatasetError(_one_line(e)) from None
    out_dir = generate.generated_dir(dataset_dir, episodes, seed, EPISODE_LENGTH)
    train_path, _ = generate.output_paths(family, out_dir)
    # The train file is renamed into place last, so the pair is complete once both exist.
    if not _complete(str(train_path)):
        return generate.generate_dataset(
            family.name, out_dir, episodes, seed, workers, episode_length=EPISODE_LENGTH, progress=progress
        )[0]
    return str(train_path)


def _download(task, dataset_dir):
    """Fetches the official files; returns None on success, else why it failed."""
    import ogbench

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # without it an unreachable host hangs for minutes
    try:
        ogbench.download_datasets([task.dataset_name], dataset_dir)
    except (OSError, http.client.HTTPException) as e:
        return _one_line(e)
    finally:
        socket.setdefaulttimeout(previous)
    return None


def _official_path(task, dataset_dir, workers, progress=True):
    path = os.path.join(dataset_dir, f'{task.dataset_name}.npz')
    if _complete(path):
        return path, 'official'
    with one_writer(path, 'is downloading') as waited:  # OGBench writes a fixed temp name: one download at a time
        failure = None if waited and _complete(path) else _download(task, dataset_dir)
    if failure is None and _complete(path):
        return path, 'official'
    failure = failure or 'the download left no complete train/val pair'
    missing = f'official dataset {path} (and its -val file) is missing and could not be downloaded ({failure})'
    if not task.family.generatable:
        download = f"python -c \"import ogbench; ogbench.download_datasets(['{task.dataset_name}'], '{dataset_dir}')\""
        raise DatasetError(
            f'{missing}; navigate datasets cannot be regenerated: on a machine with internet run `{download}` '
            f'and copy {os.path.basename(path)} and its -val file into {dataset_dir}, or pass --dataset PATH'
        )
    out_dir = generate.generated_dir(dataset_dir, OFFICIAL_EPISODES, 0, EPISODE_LENGTH)
    print(
        f"{missing}; generating the full-size play dataset locally with OGBench's oracles into {out_dir}",
        file=sys.stderr,
        flush=True,
    )
    return _generated_path(task, dataset_dir, OFFICIAL_EPISODES, 0, workers, progress), 'regenerated'


def _check_file(path, task, env):
    """Raises DatasetError unless `path` is a complete OGBench dataset file that fits `env`."""
    keys = _FILE_KEYS + (('button_states',) if task.family.short_name.startswith(('scene', 'puzzle')) else ())
    try:
        file = np.load(path)
        if not isinstance(file, np.lib.npyio.NpzFile):  # checked before `with`: an ndarray is no context manager
            raise DatasetError(f'dataset file {path} is a single .npy array, not an OGBench .npz dataset')
        with file:
            missing = [k for k in keys if k not in file.files]
            if missing:
                raise DatasetError(f'dataset file {path} lacks key(s) {", ".join(missing)}; is it an OGBench dataset?')
            # Reading every array checks its compressed data and CRC, not just the zip directory.
            arrays = {k: _read_array(file, k, path) for k in keys}
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as e:
        # A file that is not a zip at all, numpy takes for a pickle, and its advice (allow_pickle) is no fix for a
        # dataset.
        reason = 'not a zip archive' if 'allow_pickle' in str(e) else _one_line(e)
        raise DatasetError(
            f'dataset file {path} is not a readable .npz file (truncated or corrupt?): {reason}'
        ) from None

    rows = len(arrays['terminals'])
    for k, v in arrays.items():
        if v.dtype.kind not in 'biuf':  # strings or complex numbers: no float32 row of a transition
            raise DatasetError(f'dataset file {path}: {k} has dtype {v.dtype}, expected numbers (bool, int or float)')
        if v.ndim != (1 if k == 'terminals' else 2):
            expected = 'rows' if k == 'terminals' else '(rows, dim)'
            raise DatasetError(f'dataset file {path}: {k} has shape {v.shape}, expected {expected}')
        if len(v) != rows:
            raise DatasetError(f'dataset file {path}: {k} has {len(v)} rows but terminals has {rows}')
    if rows == 0 or not arrays['terminals'][-1]:
        raise DatasetError(f'dataset file {path} is empty or does not end with a terminal row (truncated episode?)')
    if np.count_nonzero(arrays['terminals']) == rows:  # OGBench drops each episode's last row, its next step unknown
        raise DatasetError(f'dataset file {path} holds no transitions: each of its episodes is a single row')
    for k, space in (('observations', env.observation_space), ('actions', env.action_space)):
        dim, expected = arrays[k].shape[1], space.shape[-1]
        if dim != expected:
            name = 'observation' if k == 'observations' else 'action'
            raise DatasetError(f'dataset {path} has {name} dim {dim} but env {task.env_id} expects {expected}')
        if not np.isfinite(arrays[k]).all():
            raise DatasetError(f'dataset file {path} has non-finite {k}')
    # OGBench relabels rewards from fixed qpos columns: a file of another model's joints, even a wider one,
    # would be read without an error and give wrong rewards.
    model = env.unwrapped.model
    for k, expected, what in (('qpos', model.nq, 'joint positions'), ('qvel', model.nv, 'joint velocities')):
        if arrays[k].shape[1] != expected:
            raise DatasetError(
                f'dataset {path} has {k} width {arrays[k].shape[1]} but env {task.env_id} has {expected} {what}'
            )


def _read_array(file, key, path):
    """`file[key]`; an array of Python objects is refused by name (numpy's allow_pickle error would read as a
    file that is not a zip archive)."""
    try:
        return file[key]
    except ValueError as e:
        if 'allow_pickle' not in str(e):
            raise
        raise DatasetError(f'dataset file {path}: {key} holds Python objects, expected numbers') from None


def find_task_file(
    task, dataset_path=None, dataset_dir=None, dataset_episodes=None, seed=0, workers=None, progress=True
):
    """(the train file of a task's data, its origin), generating or downloading it where needed.

    In order: `dataset_path` (with its -val file; origin 'given'); a dataset of `dataset_episodes`
    episodes generated under `<dataset_dir>/generated/` ('generated'); the official file in
    `dataset_dir`, found or downloaded ('official'), or when it cannot be had and the family allows it,
    the full-size play dataset generated locally by OGBench's oracles ('regenerated': the official
    recipe, not the official file). `progress`: show the generation's progress bar.
    """
    if task.family.source != 'ogbench':
        raise DatasetError(f'{task.name} is not an OGBench task; its data is not read by this loader')
    dataset_dir = os.path.expanduser(dataset_dir or generate.DEFAULT_DATASET_DIR)
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(dataset_path))) if dataset_path else dataset_dir
    if '.npz' in folder:  # OGBench finds the -val file by replacing every '.npz' of the path
        raise DatasetError(f"dataset folder {folder} has '.npz' in its name, which OGBench's loader cannot read from")
    if dataset_path is not None:
        return given_dataset_path(dataset_path), 'given'
    if dataset_episodes is not None:
        return _generated_path(task, dataset_dir, dataset_episodes, seed, workers, progress), 'generated'
    return _official_path(task, dataset_dir, workers, progress)


def load_task_data(task, env, dataset_path=None, dataset_dir=None, dataset_episodes=None, seed=0, workers=None):
    """(train, val): dicts of float32 arrays with TRANSITION_KEYS, rewards and masks per OGBench's task.

    `env` is the task's env from `envs.factory.make_env`; OGBench resets it to read the task goal. The
    file is the one `find_task_file` gives for the same arguments.
    """
    path, _ = find_task_file(task, dataset_path, dataset_dir, dataset_episodes, seed, workers)
    for p in (path, val_path(path)):
        _check_file(p, task, env)

    import ogbench

    # The full task name makes OGBench relabel rewards and masks for this task (from qpos, button states).
    try:
        train, val = ogbench.make_env_and_datasets(task.name, dataset_path=path, dataset_only=True, cur_env=env)
    except (ValueError, IndexError) as e:  # numpy's, from relabelling: e.g. button states of another puzzle's size
        raise DatasetError(
            f'dataset {path} (or its -val file) does not fit {task.name}: OGBench could not relabel its rewards '
            f'({_one_line(e)}); is it {task.family.name} data?'
        ) from None
    return _transitions(train, task), _transitions(val, task)


def _transitions(dataset, task):
    out = {k: np.asarray(dataset[k], dtype=np.float32) for k in TRANSITION_KEYS}
    out['actions'] = np.clip(out['actions'], -ACTION_CLIP, ACTION_CLIP)
    out['rewards'] = out['rewards'] + np.float32(task.family.reward_shift)
    return out
