"""One process per run directory: a second one is refused naming the holder; a killed holder blocks nothing."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.run_lock import LOCK_NAME, SHARED_OPEN_FILES, RunLockedError, run_lock

REPO = Path(__file__).resolve().parents[1]
HOLD = 'import sys, time; from launch.run_lock import run_lock\nwith run_lock(sys.argv[1]):\n    time.sleep(600)'


def _start_holder(run_dir):
    """A process that holds the lock of `run_dir` until killed; returns once the lock is taken."""
    holder = subprocess.Popen([sys.executable, '-c', HOLD, str(run_dir)], cwd=REPO)
    lock_file = Path(run_dir, LOCK_NAME)
    deadline = time.time() + 60
    while time.time() < deadline:
        if lock_file.exists() and lock_file.read_text().startswith('{'):
            assert json.loads(lock_file.read_text())['pid'] == holder.pid
            return holder
        time.sleep(0.05)
    holder.kill()
    raise AssertionError('the holder never took the lock')


def _kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_taking_the_lock_removes_temporaries_of_killed_writers(tmp_path):
    """A SIGKILL during a checkpoint save leaves atomic_write's temporary file (its cleanup never runs)."""
    (tmp_path / '.checkpoint.msgpack.tmp-4242').write_bytes(b'partial')
    (tmp_path / 'checkpoint.msgpack').write_bytes(b'complete')
    (tmp_path / '.hidden-but-not-temporary').write_bytes(b'kept')
    (tmp_path / 'notes.tmp-1').write_bytes(b'kept')  # a user's file: temporaries are hidden (.<name>.tmp-<pid>)
    with run_lock(tmp_path):
        kept = sorted(p.name for p in tmp_path.iterdir())
        assert kept == sorted(['.hidden-but-not-temporary', 'checkpoint.msgpack', 'notes.tmp-1', LOCK_NAME])


def test_a_full_disk_when_the_holder_writes_its_name_names_the_lock_file(tmp_path, monkeypatch):
    """os.pwrite's error names no file, so launch/loop.py could not report it in one line."""
    import errno

    def no_space(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'pwrite', no_space)
    with pytest.raises(OSError) as full:
        with run_lock(str(tmp_path)):
            pass
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(tmp_path / LOCK_NAME)


def test_second_holder_refused_and_killed_holder_blocks_nothing(tmp_path):
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(RunLockedError) as refused:
            with run_lock(str(tmp_path)):
                pass
        message = str(refused.value)
        assert f'pid {holder.pid}' in message and str(tmp_path) in message and '-c' in message
        assert '\n' not in message
    finally:
        _kill(holder)
    with run_lock(str(tmp_path)):  # the kernel released the killed holder's lock
        assert json.loads(Path(tmp_path, LOCK_NAME).read_text())['pid'] == os.getpid()
    with run_lock(str(tmp_path)):  # and this process released its own on leaving the block
        pass


def test_an_error_in_the_block_releases_the_lock(tmp_path):
    with pytest.raises(ValueError):
        with run_lock(str(tmp_path)):
            raise ValueError('training failed')
    with run_lock(str(tmp_path)):  # not refused as held by this process
        pass


def test_the_lock_file_names_its_holder_alone_after_a_longer_earlier_one(tmp_path):
    Path(tmp_path, LOCK_NAME).write_text(json.dumps(dict(pid=1, host='h', command='x' * 1000)))  # a killed holder's
    with run_lock(str(tmp_path)):
        assert json.loads(Path(tmp_path, LOCK_NAME).read_text())['pid'] == os.getpid()


def test_a_holder_that_has_not_written_its_name_yet_is_still_refused_in_one_line(tmp_path):
    """The holder writes its name just after taking the lock: a second process may read an empty file."""
    import fcntl

    with open(Path(tmp_path, LOCK_NAME), 'w') as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RunLockedError, match='is being trained by a process that has not written its name yet'):
            with run_lock(str(tmp_path)):
                pass


@pytest.mark.slow
def test_cli_refused_on_a_held_run_dir_then_reruns_after_the_kill(tmp_path):
    from datasets.generate import generate_dataset

    dataset, _ = generate_dataset(
        'cube-single', str(tmp_path / 'data'), episodes=2, seed=0, workers=1, episode_length=201, progress=False
    )
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    command = [sys.executable, 'launch/offline.py', '--env', 'cube-single', '--task', '1', '--dataset', dataset]
    command += '--offline-steps 2 --eval-every 2 --eval-episodes 1 --eval-envs 1 --no-progress'.split()
    command += ['--agent.hidden_dims=16,16', '--agent.batch_size=8', '--run-dir', str(run_dir)]
    holder = _start_holder(run_dir)
    try:
        refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        _kill(holder)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f'pid {holder.pid}' in refused.stderr and 'being trained' in refused.stderr
    assert not (run_dir / 'config.json').exists()  # the refused process wrote nothing

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((run_dir / 'final.json').read_text())['steps'] == 2


def _with_open_file_limit(soft, hard):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# A preexec_fn makes subprocess fork, and JAX (imported by the tests) warns at every fork; the child only sets
# its open-file limit before it execs, so the warning does not apply.
fork_with_jax_loaded = pytest.mark.filterwarnings('ignore:os.fork\\(\\) was called:RuntimeWarning')


ROOM = (
    'import resource, sys; from launch.run_lock import room_for_runs\n'
    'fit = room_for_runs(int(sys.argv[1]), wandb=sys.argv[2] == "wandb")\n'
    'print(fit, resource.getrlimit(resource.RLIMIT_NOFILE)[0])'
)


@pytest.mark.parametrize(
    'runs, wandb, soft, hard, fit, new_soft',
    [
        (100, '', 200, 1000, 100, SHARED_OPEN_FILES + 100),  # raised just enough
        (100, 'wandb', 200, 1000, 100, SHARED_OPEN_FILES + 300),  # a lock and wandb's files per run
        (100, '', 1000, 1000, 100, 1000),  # already room: left as it is
        (1000, '', 300, 600, 600 - SHARED_OPEN_FILES, 600),  # up to the hard limit, and no further
        (1000, 'wandb', 600, 600, (600 - SHARED_OPEN_FILES) // 3, 600),
    ],
)
@fork_with_jax_loaded
def test_room_for_runs_raises_the_soft_limit_up_to_the_hard_one(runs, wandb, soft, hard, fit, new_soft):
    out = subprocess.run(
        [sys.executable, '-c', ROOM, str(runs), wandb],
        cwd=REPO,
        preexec_fn=_with_open_file_limit(soft, hard),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [int(v) for v in out] == [fit, new_soft]


def _offline_under_open_file_limit(limit, *args):
    return subprocess.run(
        [sys.executable, 'launch/offline.py', '--env', 'cube-single', '--task', '1', *args],
        cwd=REPO,
        preexec_fn=_with_open_file_limit(limit, limit),
        capture_output=True,
        text=True,
        timeout=300,
    )


@fork_with_jax_loaded
def test_a_group_larger_than_the_open_file_limit_is_refused_before_anything_is_written(tmp_path):
    """Each run holds its lock file open while it trains: 1000 runs under a limit of 400 used to create the
    run directories, then stop with a traceback (too many open files) while locking them."""
    result = _offline_under_open_file_limit(
        400, '--seeds', '0-999', '--run-dir', str(tmp_path / 'runs'), '--dataset-dir', str(tmp_path / 'data')
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'train at most 272 per command' in lines[0], result.stderr
    assert not (tmp_path / 'runs').exists() and not (tmp_path / 'data').exists()


@fork_with_jax_loaded
def test_an_open_file_limit_too_low_for_one_run_says_to_raise_it(tmp_path):
    """A single run under a hard limit of 100 was told '1 runs ... train at most 0 per command (e.g. --seeds in
    smaller ranges)'."""
    result = _offline_under_open_file_limit(
        100, '--run-dir', str(tmp_path / 'run'), '--dataset-dir', str(tmp_path / 'data')
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'error: this process may open at most 100 files (ulimit -Hn), too few to train a run beside the '
        f'{SHARED_OPEN_FILES} it keeps for JAX, the env workers and their pipes: raise the limit (e.g. ulimit -n 1024)'
    ]
    assert not (tmp_path / 'run').exists() and not (tmp_path / 'data').exists()
