"""Files that are either complete or absent: written under a temporary name, fsync-ed, renamed."""

import contextlib
import os


@contextlib.contextmanager
def atomic_write(path):
    """Yields a binary file; on a clean exit it replaces `path` durably, on an error it is removed,
    so a crash never leaves a partial file under `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.tmp-{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
