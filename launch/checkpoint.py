"""Atomic, checksummed checkpoints of the whole training state.

A checkpoint is written to a temporary file in the same directory, fsync-ed and renamed over the
old one, so a crash mid-save leaves the previous checkpoint in place; the payload carries a SHA-256
so a damaged file is refused instead of being loaded.
"""

import hashlib

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
