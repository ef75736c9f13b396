"""launch/bench.py's O2O profile and the trace summary behind it."""

import gzip
import json
import math
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import types

import pytest

from agents import AGENTS
from launch.trace_summary import print_summary, self_times

REPO = pathlib.Path(__file__).resolve().parents[1]


def _event(name, ts, dur, pid=1, tid=1):
    return dict(ph='X', name=name, ts=ts, dur=dur, pid=pid, tid=tid)


def test_self_time_is_duration_less_the_nested_events_of_the_same_thread(tmp_path):
    events = [
        _event('outer', 0, 100),
        _event('first child', 10, 30),
        _event('grandchild', 20, 10),
        _event('second child', 50, 10),
        _event('outer', 200, 20),  # a second call: its self time adds to the first's
        _event('kernel', 15, 50, pid=2, tid=7),  # another process: not a child of 'outer'
        _event('$profiler.py:271 stop_trace', 300, 1000),  # the profiler's own: left out
    ]
    processes = {1: '/host:CPU', 2: '/device:GPU:0'}
    totals = self_times(events, processes)
    assert totals == {
        ('/host:CPU', 'outer'): [60.0 + 20.0, 2],
        ('/host:CPU', 'first child'): [20.0, 1],
        ('/host:CPU', 'grandchild'): [10.0, 1],
        ('/host:CPU', 'second child'): [10.0, 1],
        ('/device:GPU:0', 'kernel'): [50.0, 1],
    }

    # The same events as the profiler writes them, summarized per step (2 steps).
    metadata = [dict(ph='M', pid=pid, name='process_name', args=dict(name=name)) for pid, name in processes.items()]
    trace_dir = tmp_path / 'plugins' / 'profile' / 'run'
    trace_dir.mkdir(parents=True)
    with gzip.open(trace_dir / 'host.perfetto_trace.json.gz', 'wt') as f:
        json.dump(dict(traceEvents=metadata + events), f)
    lines = []
    print_summary(str(tmp_path), steps=2, top=2, out=lines.append)
    assert '| /host:CPU | 0.060 |' in lines  # 120 µs of host self time over 2 steps
    assert '| /device:GPU:0 | 0.025 |' in lines
    assert lines[-2:] == ['| /host:CPU | `outer` | 0.040 | 1.00 |', '| /device:GPU:0 | `kernel` | 0.025 | 0.50 |']


@pytest.mark.slow
def test_bench_prints_its_tables_and_where_a_traced_chunk_and_step_went(tmp_path):
    steps = 6
    out = subprocess.run(
        [sys.executable, 'launch/bench.py', '--agents', 'fav', '--hidden-dims', '16,16', '--stack', '2',
         '--updates-per-call', '5', '--o2o-runs', '2', '--online-steps', '4', '--rows', '500', '--seconds', '0.05',
         '--profile', str(tmp_path / 'profile'), '--profile-steps', str(steps), '--profile-top', '1000'],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    row = re.search(
        r'^\| 2 \| ([\d,.]+) \| ([\d,.]+) \| (\d+) % \| (\d+) % \| (\d+) % \| ([\d.]+) / ([\d.]+) \|$', out.stdout, re.M
    )
    assert row, out.stdout
    total, per_run = float(row[1].replace(',', '')), float(row[2].replace(',', ''))
    assert total > 0 and per_run == pytest.approx(total / 2, abs=0.1)
    assert float(row[6]) > 0 and float(row[7]) > 0  # ms per env step in the loop / stepped alone
    assert f'### Profile: {steps} env steps of 2 O2O run(s)' in out.stdout
    # The stacked-run table: FLOP/s and bytes/s are the updates/s times XLA's counts per update.
    counts = re.search(
        r'^GFLOP per update \(XLA cost analysis\): ([\d.]+); GB read and written: ([\d.]+)$', out.stdout, re.M
    )
    stacked = re.search(
        r'^\| 2 \| ([\d,]+) \| — \| [\d.]+× \| [\d.]+ \| ([\d,.]+) \| [\d.]+ % \| ([\d,.]+) \| [\d.]+ % \|$',
        out.stdout,
        re.M,
    )
    assert counts and stacked, out.stdout
    updates_per_s = float(stacked[1].replace(',', ''))
    assert float(stacked[2].replace(',', '')) == pytest.approx(updates_per_s * float(counts[1]), rel=0.05, abs=0.1)
    assert float(stacked[3].replace(',', '')) == pytest.approx(updates_per_s * float(counts[2]), rel=0.05, abs=0.1)
    # The traced stretch is `steps` env steps, each one call of bench's env_step for both runs at once.
    env_step = re.search(r'^\| /host:CPU \| `\$bench\.py:\d+ env_step` \| ([\d.]+) \| ([\d.]+) \|$', out.stdout, re.M)
    assert env_step, out.stdout
    assert float(env_step[2]) == 1.0 and float(env_step[1]) > 0

    # The fused chunk's profile: most XLA operations of the update run once per update.
    # (A stacked step: one update of each of the 2 runs.)
    chunk = out.stdout.split('### Profile: one chunk of 5 updates of 2 stacked run(s), per stacked step')[1]
    chunk = chunk.split('###')[0]
    assert '| process | event | self ms per stacked step | calls per stacked step |' in chunk
    calls = [float(c) for c in re.findall(r'^\| /host:CPU \| `[^`]+` \| [\d.]+ \| ([\d.]+) \|$', chunk, re.M)]
    assert len(calls) > 10 and statistics.mode(calls) == 1.0


POSITIVE = '--hidden-dims, --stack and --o2o-runs take positive integers below 2147483648, e.g. 1,4,8'


@pytest.mark.parametrize(
    'argv, message',
    [
        (['--profile-steps', '0'], '--profile-steps must be at least 1, got 0'),
        # Counted in int32 on the device: an OverflowError, XLA's abort (exit 134), or a hang.
        (['--updates-per-call', '3000000000'], '--updates-per-call must be < 2147483648, got 3000000000'),
        (['--hidden-dims', '3000000000'], POSITIVE),
        (['--stack', '1,3000000000'], POSITIVE),
        (['--profile-top', '0'], '--profile-top must be at least 1, got 0'),
        (['--updates-per-call', '0'], '--updates-per-call must be at least 1, got 0'),
        (['--plain-steps', '0'], '--plain-steps must be at least 1, got 0'),
        (['--online-steps', '0'], '--online-steps must be at least 1, got 0'),
        (['--rows', '0'], '--rows must be at least 1, got 0'),
        (['--seconds', '0'], '--seconds must be > 0 and finite, got 0.0'),
        (['--seconds', 'nan'], '--seconds must be > 0 and finite, got nan'),  # it timed 2 calls of each
        (['--seconds', 'inf'], '--seconds must be > 0 and finite, got inf'),  # it never ended
        (['--stack', '1,-1'], POSITIVE),
        (['--hidden-dims', '0'], POSITIVE),
        (['--stack', '1,4,1'], '--stack and --o2o-runs name each count once, e.g. 1,4,8'),
        (['--agents', 'fql, fql'], '--agents names each agent once, e.g. fav,fql'),  # it benchmarked FQL twice
        (['--o2o-runs', '8,8'], '--stack and --o2o-runs name each count once, e.g. 1,4,8'),
        (['--o2o-runs', '0'], POSITIVE),
        (['--agents', 'fav,fqll'], 'unknown agent fqll; valid: ' + ', '.join(AGENTS)),
        (['--profile', ''], '--profile is empty: give a folder, or leave --profile out for the default'),
    ],
)
def test_bench_refuses_degenerate_settings_in_one_line(argv, message, tmp_path, capsys):
    from launch import bench

    with pytest.raises(SystemExit) as stop:  # checked in-process: a check that let it through fails at once
        bench.parse_args(['--profile', str(tmp_path / 'profile'), *argv])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f'error: {message} (see launch/bench.py --help)']
    assert not (tmp_path / 'profile').exists()


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs /proc: a folder no one can write in, root included')
def test_bench_refuses_a_profile_folder_it_cannot_write_before_benchmarking(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    for profile, message in [
        (tmp_path / 'notes.txt' / 'p', f'{tmp_path / "notes.txt"} is a file; pass a folder'),
        ('/proc/fav_profile', 'cannot write in /proc ('),
    ]:
        out = subprocess.run(
            [sys.executable, 'launch/bench.py', '--agents', 'fav', '--profile', str(profile)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 2 and out.stdout == '', out.stdout
        assert len(out.stderr.strip().splitlines()) == 1
        assert out.stderr.startswith(f'error: --profile {profile}: {message}'), out.stderr
    assert (tmp_path / 'notes.txt').read_text() == 'mine'


def test_bench_with_no_agents_and_no_o2o_runs_prints_only_the_memory_table():
    out = subprocess.run(
        [sys.executable, 'launch/bench.py', '--agents', '', '--o2o-runs', '', '--seconds', '0.05', '--rows', '500',
         '--hidden-dims', '8,8'],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    headings = re.findall(r'^##+ .*', out.stdout, re.M)
    assert headings == [
        '## Device memory of an O2O run (its replay ring of max(2M, N + 1) rows, agent state, update; FAV)'
    ]
    assert '| cube-double-play |' in out.stdout and '| humanoidmaze-large-navigate |' in out.stdout


def test_bench_refuses_more_rows_than_fit_in_memory_in_one_line():
    rows = 2 * 10**9  # below int32's bound, but 0.5 TiB of observations: numpy refuses it at once
    out = subprocess.run(
        [sys.executable, 'launch/bench.py', '--agents', '', '--o2o-runs', '', '--rows', str(rows)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == '', out.stdout
    assert (
        out.stderr.strip() == f'error: --rows {rows}: random data of that many rows does not fit in memory; pass fewer'
    )


def test_bench_takes_any_registered_env_and_refuses_an_unknown_one_in_one_line():
    base = [sys.executable, 'launch/bench.py', '--agents', 'iql', '--stack', '1', '--o2o-runs', '']
    fast = ['--hidden-dims', '8', '--plain-steps', '5', '--seconds', '0.05', '--rows', '500']
    d4rl = subprocess.run([*base, *fast, '--env', 'antmaze-umaze-v2'], cwd=REPO, capture_output=True, text=True)
    assert d4rl.returncode == 0, d4rl.stderr
    assert 'antmaze-umaze-v2 sizes (obs 29, act 8)' in d4rl.stdout
    unknown = subprocess.run([*base, '--env', 'cube-tripple'], cwd=REPO, capture_output=True, text=True)
    assert unknown.returncode == 2 and unknown.stdout == ''
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert unknown.stderr.startswith("error: unknown environment 'cube-tripple'")


def test_step_cost_line_fits_the_fixed_and_per_run_parts():
    from launch.bench import step_cost_line

    runs = [1, 4, 8, 40]
    line = step_cost_line(runs, [0.5 + 0.38 * r for r in runs])
    assert line.startswith('stacked step ≈ 0.500 ms + 0.380 ms × runs')
    assert line.endswith('tends toward 2.32× one run as runs grow')  # (0.5 + 0.38) / 0.38
    # More time per run than one run alone takes, less the fixed part: nothing to share.
    assert step_cost_line([1, 4], [2.2, 10.5]).endswith('stacking does not beat one run')
    assert step_cost_line([1, 8], [1.0, 0.9]).endswith('no part grows with the runs')


def test_self_time_breaks_ties_parent_first_and_an_event_starting_at_an_end_is_a_sibling():
    events = [
        _event('child', 0, 40),  # starts with its parent, listed first
        _event('outer', 0, 100),
        _event('sibling', 40, 10),  # starts as 'child' ends: a sibling of it, inside 'outer'
        _event('next', 100, 5),  # starts as 'outer' ends: not inside it
    ]
    assert self_times(events, {1: 'host'}) == {
        ('host', 'outer'): [50.0, 1],
        ('host', 'child'): [40.0, 1],
        ('host', 'sibling'): [10.0, 1],
        ('host', 'next'): [5.0, 1],
    }


def test_the_summary_reads_the_newest_trace(tmp_path):
    for name, event, mtime in (('new', 'current', 2_000_000_000), ('old', 'stale', 1_000_000_000)):
        path = tmp_path / name / f'{name}.perfetto_trace.json.gz'
        path.parent.mkdir()
        with gzip.open(path, 'wt') as f:
            json.dump([_event(event, 0, 10)], f)
        os.utime(path, (mtime, mtime))
    lines = []
    print_summary(str(tmp_path), steps=1, out=lines.append)
    assert lines[-1] == '| 1 | `current` | 0.010 | 1.00 |'


def test_memory_table_is_the_ring_agent_and_update_bytes_and_the_runs_that_fit_in_90_percent(monkeypatch, capsys):
    import jax.numpy as jnp

    from launch import bench

    class Agent:  # 1,000 float32s of state
        @staticmethod
        def create(key, observations, actions, config):
            return {'params': jnp.zeros(1000, jnp.float32)}

    fake = types.SimpleNamespace(
        Agent=Agent, get_config=lambda family, changes, mode: types.SimpleNamespace(batch_size=4)
    )
    monkeypatch.setitem(bench.AGENTS, 'fav', fake)
    monkeypatch.setattr(bench, 'device_memory', lambda: 2**34)
    monkeypatch.setattr(bench, 'update_working_bytes', lambda agent, batch: 10**8)  # 0.09 GiB
    bench.bench_memory(types.SimpleNamespace(hidden_dims=(8,)))
    out = capsys.readouterr().out
    # A row: observations and next observations, the action, reward, mask, terminal, as float32. Rings:
    # cube-double 2M rows (obs 37, act 5), humanoidmaze-large 2M + 1 rows (2M of data; obs 69, act 21).
    cube_ring, humanoid_ring = 4 * 2_000_000 * (2 * 37 + 5 + 3), 4 * 2_000_001 * (2 * 69 + 21 + 3)
    for family, ring in (('cube-double-play', cube_ring), ('humanoidmaze-large-navigate', humanoid_ring)):
        per_run = ring + 4000 + 10**8
        gib = ' | '.join(f'{b / 2**30:.2f} GiB' for b in (ring, 4000, 10**8, per_run))
        assert f'| {family} | {gib} | {int(0.9 * 2**34 // per_run)} |' in out  # cube-double: 0.70 GiB, 22


def test_an_updates_working_memory_holds_the_new_agent_state_and_the_scratch_xla_counts():
    """The update does not write the new agent state over the old one: its working memory is at least the
    state's size, plus XLA's scratch, so a run needs more than its ring and state."""
    import jax
    import jax.numpy as jnp

    from agents import fav
    from envs.registry import resolve_task
    from launch import bench

    config = fav.get_config(resolve_task('cube-double').family, dict(hidden_dims=(16, 16), batch_size=8))
    agent = fav.Agent.create(0, jnp.zeros((1, 37)), jnp.zeros((1, 5)), config)
    batch = {k: jnp.zeros((8, d)) for k, d in (('observations', 37), ('next_observations', 37), ('actions', 5))}
    batch.update(next_actions=jnp.zeros((8, 5)), rewards=jnp.zeros(8), masks=jnp.ones(8), terminals=jnp.zeros(8))
    state = sum(jnp.asarray(x).nbytes for x in jax.tree_util.tree_leaves(agent))
    analysis = jax.jit(lambda a, b: a.update(b)).lower(agent, batch).compile().memory_analysis()
    working = bench.update_working_bytes(agent, batch)
    assert working == analysis.output_size_in_bytes + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes
    assert working > state and analysis.temp_size_in_bytes > 0


@pytest.mark.parametrize(
    'script, interrupted_in, argv',
    [
        ('bench', 'envs.registry.resolve_task', ['--agents', 'fav']),  # bench's first step after its checks
        ('diagnose', 'launch.command_line.check_writable_folder', ['--quick', '--out', 'OUT']),
        ('tables', 'launch.results.load_runs', ['runs', '--out', 'OUT']),
    ],
)
def test_ctrl_c_ends_a_command_in_one_line(script, interrupted_in, argv, tmp_path):
    """Ctrl-C (a KeyboardInterrupt in the command's first step) ends bench.py, diagnose.py and tables.py with one
    line and exit code 130, as the training commands stop, not with a traceback."""
    module, name = interrupted_in.rsplit('.', 1)
    argv = [str(tmp_path / 'out') if a == 'OUT' else a for a in argv]
    program = (
        f'import importlib, runpy, sys\n'
        f'def interrupt(*args, **kwargs):\n    raise KeyboardInterrupt\n'
        f'setattr(importlib.import_module({module!r}), {name!r}, interrupt)\n'
        f'sys.argv = [{script!r}, *{argv!r}]\n'
        f'runpy.run_path("launch/{script}.py", run_name="__main__")\n'
    )
    done = subprocess.run([sys.executable, '-c', program], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr.strip()) == (130, 'interrupted'), done.stderr[-2000:]


@pytest.mark.parametrize(
    'script, stop, ending',
    [('bench', 'SIGINT', (130, 'interrupted')), ('diagnose', 'SIGTERM', (143, 'terminated'))]
    + [('tables', 'SIGINT', (130, 'interrupted'))],
)
def test_a_stop_while_a_command_imports_ends_it_in_one_line(script, stop, ending, tmp_path):
    """Raised inside an import (the seconds `import numpy` and JAX take), a Ctrl-C was a traceback; it now waits
    for the imports and ends the command before it starts. SIGTERM ends it in one line too (exit 143)."""
    program = (
        'import os, runpy, signal, sys\n'
        'class StopAtNumpy:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        '        if name == "numpy":\n'
        '            sys.meta_path.remove(self)\n'
        f'            os.kill(os.getpid(), signal.{stop})\n'
        'sys.meta_path.insert(0, StopAtNumpy())\n'
        f'sys.argv = [{script!r}, "--out", {str(tmp_path / "out")!r}]\n'
        f'runpy.run_path("launch/{script}.py", run_name="__main__")\n'
    )
    done = subprocess.run([sys.executable, '-c', program], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr.strip()) == ending, done.stderr[-2000:]
    assert not (tmp_path / 'out').exists()


def test_the_stacked_table_is_the_timed_rates_over_one_run_the_plain_loop_and_the_runs(monkeypatch, capsys):
    from envs.registry import resolve_task
    from launch import bench

    # Calls per second handed out in the order bench_agent times them: the plain loop (20 updates a call), then
    # one fused chunk of K = 5 updates of each of 1, then 4 stacked runs.
    rates = iter([10.0, 40.0, 30.0])
    monkeypatch.setattr(bench, 'timed', lambda fn, seconds, compile=None: (next(rates), 0.0))
    args = types.SimpleNamespace(
        hidden_dims=(8,), updates_per_call=5, plain_steps=20, seconds=0.01, stack=[1, 4], profile=None, profile_top=1
    )
    data = bench.random_data(37, 5, 64)
    bench.bench_agent('fav', AGENTS['fav'], args, resolve_task('cube-double').family, data, (1e12, 2e10))
    out = capsys.readouterr().out
    # Plain loop: 10 × 20 = 200 updates/s. One run: 40 × 5 = 200 updates/s, 1e3 / 200 = 5 ms a step. Four
    # runs: 30 × 5 × 4 = 600 updates/s, 3× one run and 3× the plain loop, 4e3 / 600 = 6.667 ms a stacked step.
    assert 'plain per-step loop: 200 updates/s' in out
    assert re.search(r'^\| 1 \| 200 \| 1\.00× \| 1\.00× \| 5\.000 \|', out, re.M), out
    assert re.search(r'^\| 4 \| 600 \| 3\.00× \| 3\.00× \| 6\.667 \|', out, re.M), out
    # The line through (1, 5) and (4, 20/3): 40/9 ms + 5/9 ms × runs, tending toward (40/9 + 5/9) / (5/9) = 9×.
    assert 'stacked step ≈ 4.444 ms + 0.556 ms × runs' in out and 'tends toward 9.00× one run' in out
    # The achieved rates are the updates/s times the update's FLOP and bytes, each against its own probe: the
    # 1 TFLOP/s matmul probe and the 20 GB/s copy probe.
    gflop, gb = map(
        float, re.search(r'GFLOP per update \(XLA cost analysis\): (\S+); GB read and written: (\S+)', out).groups()
    )
    assert gflop > 0 and gb > 0 and not math.isclose(gflop, gb, rel_tol=0.1)
    for runs, rate in ((1, 200), (4, 600)):
        row = re.search(rf'^\| {runs} \| {rate} \|.*$', out, re.M)[0]
        achieved, matmul_share, moved, copy_share = (float(c.strip(' %')) for c in row.strip('|').split('|')[5:9])
        assert achieved == pytest.approx(rate * gflop, rel=0.01, abs=0.05)
        assert matmul_share == pytest.approx(100 * rate * gflop / 1e3, rel=0.01, abs=0.05)
        assert moved == pytest.approx(rate * gb, rel=0.01, abs=0.05)
        assert copy_share == pytest.approx(100 * rate * gb / 20, rel=0.01, abs=0.05)


def test_the_probes_count_two_flop_per_multiply_add_and_each_byte_read_and_written(monkeypatch):
    import jax

    from launch import bench

    monkeypatch.setattr(bench, 'timed', lambda fn, seconds, compile=None: (3.0, 0.0))  # 3 calls per second
    cpu = jax.default_backend() == 'cpu'
    n = 2048 if cpu else 8192  # an n × n matmul: n³ multiply-adds of 2 FLOP each
    assert bench.matmul_probe(0.01) == 3.0 * 2 * n**3
    size = (32 if cpu else 512) * 2**20  # float32s, each read once and written once: 2 × 4 bytes
    assert bench.copy_probe(0.01) == 3.0 * 2 * 4 * size


def test_a_ctrl_c_while_bench_compiles_waits_for_the_compile_to_end():
    """XLA compiles in a thread of its own, and a Ctrl-C that ended the wait for a compile crashed the process
    (SIGSEGV) instead of stopping it: bench holds SIGINT through the calls that compile (the first call of each
    timed function, the agents' creation) and delivers it when they return."""
    from launch import bench

    went_on = []

    def interrupting(*args):
        os.kill(os.getpid(), signal.SIGINT)
        went_on.append(True)  # not reached had the signal been raised here
        return args[0] if args else None

    with pytest.raises(KeyboardInterrupt):
        bench.timed(interrupting, 0.0)
    assert went_on == [True]  # stopped after the first call, before the timed ones
    module = types.SimpleNamespace(Agent=types.SimpleNamespace(create=interrupting))
    data = bench.random_data(3, 2, 4)
    with pytest.raises(KeyboardInterrupt):
        bench.make_agents(module, None, data, 2)
    assert went_on == [True, True]


@pytest.mark.parametrize('rows', [300, 100])  # 100: fewer rows than a batch, which the plain loop draws with repeats
def test_bench_holds_ctrl_c_only_while_it_compiles_not_through_a_timed_call(rows, monkeypatch):
    """The first call of the plain loop ran all --plain-steps updates with SIGINT and SIGTERM held (a Ctrl-C
    waited for it; with a large --plain-steps only SIGKILL stopped bench): each timed function is compiled by a
    call of one update, held, and its timed calls run with the handlers of outside and compile nothing (a compile
    there would be timed, and not held)."""
    import logging

    import jax

    from launch import bench

    real_timed, outside, timed_calls, compiles = bench.timed, signal.getsignal(signal.SIGINT), [], []
    handler = logging.Handler()
    handler.emit = lambda record: compiles.append(record) if 'Compiling' in record.getMessage() else None

    def timed(fn, seconds, compile=None):
        def checked():
            assert signal.getsignal(signal.SIGINT) is outside, 'a timed call ran with Ctrl-C held'
            before = len(compiles)
            fn()
            assert len(compiles) == before, f'a timed call compiled: {compiles[before].getMessage()[:200]}'
            timed_calls.append(fn)

        assert compile is not None, 'its first timed call would compile, with Ctrl-C held'
        return real_timed(checked, seconds, compile)

    monkeypatch.setattr(bench, 'timed', timed)
    argv = ['--agents', 'iql', '--stack', '1', '--o2o-runs', '', '--hidden-dims', '8,8', '--seconds', '0.01']
    args, _, _, task = bench.parse_args([*argv, '--rows', str(rows), '--updates-per-call', '2', '--plain-steps', '2'])
    logging.getLogger('jax').addHandler(handler)
    try:
        with jax.log_compiles(True):
            bench.bench_agent('iql', AGENTS['iql'], args, task.family, bench.random_data(37, 5, rows), (1e9, 1e9))
    finally:
        logging.getLogger('jax').removeHandler(handler)
    assert compiles, 'no compile was logged: the check above checked nothing'
    assert len({id(fn) for fn in timed_calls}) == 2  # the plain loop and the fused chunk of one run


@pytest.mark.parametrize('error', ['jax', 'numpy'])
def test_out_of_memory_in_a_measurement_is_one_line(error, monkeypatch, capsys):
    """Networks, stacks or buffers too large for the device: XLA's RESOURCE_EXHAUSTED, or numpy's MemoryError, was
    a traceback; the training commands already said it in one line."""
    import jax

    from launch import bench

    def too_big(*args):
        if error == 'jax':
            raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 40000000000 bytes.\nmore')
        raise MemoryError('Unable to allocate 37.3 GiB for an array with shape (100000, 100000)')

    monkeypatch.setattr(bench, 'bench_agent', too_big)
    argv = ['--agents', 'iql', '--o2o-runs', '', '--rows', '10', '--seconds', '0.01', '--hidden-dims', '100000']
    monkeypatch.setattr(sys, 'argv', ['launch/bench.py', *argv])
    assert bench.main() == 1
    reason = (
        'RESOURCE_EXHAUSTED: Out of memory allocating 40000000000 bytes.'
        if error == 'jax'
        else 'Unable to allocate 37.3 GiB for an array with shape (100000, 100000)'
    )
    assert capsys.readouterr().err.strip().splitlines() == [
        f'error: out of memory ({reason}); give smaller --hidden-dims, --stack, --o2o-runs, --rows or --online-steps'
    ]
