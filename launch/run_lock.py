"""One process trains a run directory at a time.

An exclusive `flock` on `<run_dir>/run.lock`, held for the run's duration, with the holder's pid,
host and command written into the file. The kernel drops the lock when the holder's process ends,
however it ends, so a lock left by a killed process never blocks a rerun. (flock is per host on most
network filesystems; a sweep shares run directories through its job list, not through this lock.)
"""

import contextlib
import fcntl
import json
import os
import resource
import socket
import sys

from datasets.files import remove_leftover_temporaries

LOCK_NAME = 'run.lock'
# Files a training process keeps open besides its runs' (JAX, the env workers' pipes, the terminal): 18 with
# 8 runs, 26 with 8 runs and wandb (measured with /proc/PID/fd), so a wide margin.
SHARED_OPEN_FILES = 128
WANDB_FILES_PER_RUN = 2  # the files each wandb run of a group keeps open, about


def room_for_runs(runs, wandb=False):
    """How many runs one process can lock (one open file each, held while they train), after raising its soft
    limit on open files as far as `runs` need and the hard limit allows: `runs` when they all fit."""
    per_run = 1 + (WANDB_FILES_PER_RUN if wandb else 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SHARED_OPEN_FILES + runs * per_run
    if soft != resource.RLIM_INFINITY and needed > soft:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY:
        return runs
    return min(runs, max(soft - SHARED_OPEN_FILES, 0) // per_run)


class RunLockedError(Exception):
    """Another live process holds the run directory: reported as one line, exit code 2."""


def _holder_text(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        holder = json.loads(os.read(fd, 65536).decode())
        return f'pid {holder["pid"]} on {holder["host"]} ({holder["command"]})'
    except (ValueError, KeyError, TypeError):
        return 'a process that has not written its name yet'


@contextlib.contextmanager
def run_lock(run_dir):
    path = os.path.join(run_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f'{run_dir} is being trained by {_holder_text(fd)}; wait for it to end or stop it first'
            ) from None
        holder = dict(pid=os.getpid(), host=socket.gethostname(), command=' '.join(sys.argv))
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError as e:  # a full disk: a write names no file, so name it here
            raise OSError(e.errno, e.strerror, path) from None
        remove_leftover_temporaries(run_dir)  # a checkpoint save cut by a kill; the holder alone writes here
        yield
    finally:
        os.close(fd)  # releases the lock
