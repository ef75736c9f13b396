"""Helpers for tests that run the command-line programs: launch a run, kill and resume one, compare results."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from launch.checkpoint import CheckpointError, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
# One evaluation episode: stepped in this process (the tests of the FAV runs ask for two, in two worker processes).
SMALL = ['--agent.hidden_dims=32,32', '--agent.batch_size=32', '--eval-episodes', '1', '--no-progress']


def launch(script, *args, timeout=600):
    return subprocess.run(
        [sys.executable, f'launch/{script}.py', *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def process_group(command, **popen_args):
    """Starts `command` in a session of its own, which Ctrl-C (SIGINT to the group) stops even when the tests
    were started with SIGINT ignored (a background job of a non-interactive shell passes SIG_IGN on, and a
    Python started so never raises KeyboardInterrupt). The whole group is killed on the way out, so a
    failing test leaves no training behind."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a handler: the child starts at default
    try:
        process = subprocess.Popen(command, cwd=REPO, start_new_session=True, **popen_args)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def checkpoint_leaves(run_dir):
    """Every array of the run's checkpointed agent (any agent), in a fixed order."""
    return jax.tree_util.tree_leaves(load_checkpoint(os.path.join(run_dir, 'checkpoint.msgpack'))['agent'])


def run_killed_then_resumed(script, args, run_dir, kill_after_step, run_dirs=1, attempts=3):
    """Starts a run (or a group of `run_dirs` runs under `run_dir`), SIGKILLs it once every run has a
    checkpoint of the same step past `kill_after_step`, then reruns it. A kill that came only after the last
    checkpoint (the run's end, before final.json) would leave the rerun nothing to resume: that start is
    thrown away and made again, so the rerun always goes on from a step before the end."""
    for _ in range(attempts):
        step = _killed_at(script, args, run_dir, kill_after_step, run_dirs)
        config = json.loads(next(Path(run_dir).rglob('config.json')).read_text())
        if step < config['offline_steps'] + (config.get('online_steps') or 0):
            break
        shutil.rmtree(run_dir)
    else:
        raise AssertionError(f'in {attempts} starts, every kill came after the last checkpoint (step {step})')
    resumed = launch(script, *args, '--run-dir', run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f'from step {step}' in resumed.stdout, resumed.stdout
    return resumed


def _killed_at(script, args, run_dir, kill_after_step, run_dirs):
    """The step of the checkpoints the run had when it was killed."""
    process = subprocess.Popen(
        [sys.executable, f'launch/{script}.py', *args, '--run-dir', run_dir],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        checkpoints = list(Path(run_dir).rglob('checkpoint.msgpack'))
        try:
            steps = {load_checkpoint(str(c))['step'] for c in checkpoints}
        except (CheckpointError, OSError):
            steps = set()
        if len(checkpoints) == run_dirs and len(steps) == 1 and steps.pop() >= kill_after_step:
            break
        time.sleep(0.05)
    assert process.poll() is None, f'the run ended before it could be killed: {process.stderr.read()}'
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(Path(run_dir).rglob('final.json'))
    steps = {load_checkpoint(str(c))['step'] for c in Path(run_dir).rglob('checkpoint.msgpack')}
    assert len(steps) == 1, steps  # a group checkpoints as one
    return steps.pop()


def assert_same_result(whole, killed):
    """Same final.json (but the wall time, and the code version that finished it: a commit made while the
    test runs must not fail it), evaluations and parameters, exactly."""

    def final(run_dir):
        record = json.loads(Path(run_dir, 'final.json').read_text())
        return {k: v for k, v in record.items() if k not in ('wall_time_s', 'code_version')}

    assert final(killed) == final(whole)
    assert Path(killed, 'eval.csv').read_text() == Path(whole, 'eval.csv').read_text()
    for a, b in zip(checkpoint_leaves(whole), checkpoint_leaves(killed), strict=True):
        np.testing.assert_array_equal(a, b)
