"""Files that are either complete or absent: written under a temporary name, fsync-ed, renamed; and
one writer at a time for files that several processes may produce at once."""

import contextlib
import fcntl
import os
import sys

TEMPORARY = '.tmp-'  # atomic_write's temporary files: .<name>.tmp-<pid>


def remove_leftover_temporaries(directory):
    """Deletes the temporary files of writers that were killed mid-write in `directory` (a killed
    process never reaches its cleanup). Only for a directory that no other process writes to now."""
    for name in os.listdir(directory):
        if name.startswith('.') and TEMPORARY in name:
            os.remove(os.path.join(directory, name))


def nearest_existing(path):
    """`path` made absolute, or the nearest folder above it that exists: where making `path` would start (a link
    to nothing counts as existing, since it is in the way too)."""
    path = os.path.abspath(os.path.expanduser(path))
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


@contextlib.contextmanager
def atomic_write(path):
    """Yields a binary file; on a clean exit it replaces `path` durably, on an error it is removed,
    so a crash never leaves a partial file under `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}{TEMPORARY}{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno is None or e.filename not in (None, tmp):
            raise
        # A write, flush or fsync that fails (a full disk) names no file, and a folder deleted meanwhile names the
        # temporary file, which the user never made: name the one it was writing.
        raise OSError(e.errno, e.strerror, os.fspath(path)) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def one_writer(path, what):
    """Holds an exclusive lock tied to `path` (on the hidden file `.<name>.lock` beside it) while its
    writer runs; yields True if another process held it first (its writer may have finished the file:
    check again). The kernel drops the lock when its holder dies, so a killed writer blocks nobody."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f'.{name}.lock'), 'a') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            print(f'waiting for another process {what} {path}', file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
            waited = True
        yield waited
