"""Atomic, checksummed checkpoints of the whole training state.

A checkpoint is written to a temporary file in the same directory, fsync-ed and renamed over the
old one, so a crash mid-save leaves the previous checkpoint in place; the payload carries a SHA-256
so a damaged file is refused instead of being loaded. A group's runs are saved in two phases (all
written, then all renamed into place), so a kill mid-save never leaves them at different steps.
"""

import glob
import hashlib
import os

from flax import serialization

from datasets.files import atomic_write

MAGIC = b'FAVRL-CKPT-1\n'
CHECKPOINT_NAME = 'checkpoint.msgpack'


class CheckpointError(Exception):
    pass


def atomic_write_bytes(path, data):
    with atomic_write(path) as f:
        f.write(data)


def save_checkpoint(path, state):
    """`state`: a nest of dicts / lists / numbers / strings / arrays (flax state dicts included)."""
    payload = serialization.msgpack_serialize(state)
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def _pending_path(path, step):
    return f'{path}.next-{step}'


def save_group_checkpoints(paths, step, states):
    """Each run's checkpoint at `step` (`states`: one per path, made as they are written), in two phases:
    every new checkpoint is written beside its run's current one, then all are renamed into place.
    Resumed after a kill between two runs' saves, the runs of a group would sit at different steps,
    and a group trained apart is not bit-identical to the group (vmap over other sizes rounds otherwise)."""
    for path, state in zip(paths, states, strict=True):
        save_checkpoint(_pending_path(path, step), state)
    for path in paths:
        os.replace(_pending_path(path, step), path)


def load_group_checkpoints(paths):
    """Each run's checkpoint (None where there is none yet), after settling a group save that a kill
    interrupted: completed if every run's new checkpoint had been written (the renames had begun), else
    the new ones are dropped and the group resumes from the previous save."""
    pending = {}  # path: (its newest pending file, that file's step)
    for path in paths:
        found = sorted(
            (int(name.rsplit('-', 1)[1]), name)
            for name in glob.glob(glob.escape(path) + '.next-*')
            if name.rsplit('-', 1)[1].isdigit()  # not a pending save (a copy such as .next-80.bak): left alone
        )
        for _, stale in found[:-1]:
            os.remove(stale)
        if found:
            step, name = found[-1]
            pending[path] = (name, step)
    states = [load_checkpoint(path) if os.path.exists(path) else None for path in paths]
    if pending:
        new = max(step for _, step in pending.values())
        written = all(
            (path in pending and pending[path][1] == new) or (state is not None and int(state['step']) == new)
            for path, state in zip(paths, states, strict=True)
        )
        for i, path in enumerate(paths):
            if path in pending:
                name, step = pending[path]
                if written and step == new:
                    os.replace(name, path)
                    states[i] = load_checkpoint(path)
                else:
                    os.remove(name)
    return states


def load_checkpoint(path):
    with open(path, 'rb') as f:
        blob = f.read()
    header = len(MAGIC) + 32
    if len(blob) < header or not blob.startswith(MAGIC):
        raise CheckpointError(f'{path} is not a FAV-RL checkpoint (bad header); delete it to restart the run')
    digest, payload = blob[len(MAGIC) : header], blob[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f'{path} is damaged (checksum mismatch); delete it to restart the run')
    return serialization.msgpack_restore(payload)
