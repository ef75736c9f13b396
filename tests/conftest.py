"""Test order: the fast known-answer tests first, the slow end-to-end runs last (`-m "not slow"` skips them)."""

import os
import shutil
import signal
import tempfile

import pytest

from launch.xla_cpu import turn_off_ynn_fusions


def pytest_configure(config):
    # The CLI tests start many short processes (a run, a killed run, its resumption) that compile the same
    # programs: one persistent compilation cache per test process, shared by the CLI runs it starts, saves most
    # of those compiles. Not one for all the test processes (pytest-xdist's workers, which run at once): JAX
    # writes an entry in place, and a process reading it half-written warns on its stderr, which the tests of
    # one-line errors read. (JAX locks its cache only when given a size limit, whose bookkeeping, a scan of the
    # whole cache at each write, made the suite 1.8 times slower.) A user's own JAX_COMPILATION_CACHE_DIR is left
    # as it is.
    runs_tests = hasattr(config, 'workerinput') or not getattr(config.option, 'numprocesses', None)
    if runs_tests and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
        config.jax_cache_dir = tempfile.mkdtemp(prefix='fav-rl-jax-cache-')
        os.environ['JAX_COMPILATION_CACHE_DIR'] = config.jax_cache_dir
        os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    # The tests run tiny networks for a few hundred steps, where compiling is most of the time: XLA's
    # backend (LLVM) optimizations off compiles about a third faster; what a program computes is the same. (The
    # few tests that train a thousand updates in this process compile that loop with them on: agent_helpers.py.)
    if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
        os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
    # As the entry points do; the CLIs the tests start inherit it.
    turn_off_ynn_fusions()
    # A session a shell starts in the background (`nohup ... &`, `&` in a script) inherits SIGINT ignored, and
    # the tests of Ctrl-C would see nothing: they need Python's own handler, as in a terminal (the CLIs they start
    # get it back too: an exec resets a handled signal).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_unconfigure(config):
    if getattr(config, 'jax_cache_dir', None):
        shutil.rmtree(config.jax_cache_dir, ignore_errors=True)


def pytest_collection_modifyitems(items):
    def order(item):
        slow = item.get_closest_marker('slow') is not None
        return (slow, item.module.__name__.rpartition('.')[2] != 'test_known_answers')

    items.sort(key=order)  # stable: files and tests keep their order within each group


@pytest.fixture(scope='session')
def dataset(tmp_path_factory):
    """A tiny generated cube-single dataset (2 episodes of 201 steps), shared by the end-to-end tests."""
    from datasets.generate import generate_dataset

    out = tmp_path_factory.mktemp('data')
    train_path, _ = generate_dataset(
        'cube-single', str(out), episodes=2, seed=0, workers=1, episode_length=201, progress=False
    )
    return train_path
