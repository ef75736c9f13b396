"""Sweeps: the job list, the dry run's estimate, and a tiny sweep through a local Ray cluster that is
killed midway and rerun."""

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from envs.registry import FAMILIES
from launch import sweep, sweep_plan
from launch.sweep import Progress
from tests.cli_helpers import process_group

REPO = Path(__file__).resolve().parents[1]
TASK = 'cube-single-play-singletask-task{}-v0'


def test_seeds_and_suites(tmp_path, capsys):
    def planned(*argv):
        args = sweep.build_parser().parse_args([*argv, '--runs-dir', str(tmp_path)])
        mode, runs, _ = sweep_plan.plan(args, [])
        return mode, sorted({r.seed for r in runs}), len({r.task for r in runs})

    # The CLIs' reading of --seeds, sorted: the sweep plans its runs by seed.
    assert planned('--suite', 'cube-single', '--seeds', '5,1-2') == ('offline', [1, 2, 5], 5)
    assert planned('--suite', 'cube-single', '--seeds', '3-3,0') == ('offline', [0, 3], 5)  # a range of one seed
    assert planned('--suite', 'o2o30,cube-single', '--seeds', '0-3') == ('o2o', [0, 1, 2, 3], 35)  # o2o30 sets the mode
    assert sweep_plan.expand_suite('cube-single') == [TASK.format(k) for k in range(1, 6)]
    assert len(sweep_plan.expand_suite('offline56')) == 56 and len(sweep_plan.expand_suite('o2o30')) == 30
    assert sweep_plan.expand_suite(TASK.format(3)) == [TASK.format(3)]
    # Spaces after the commas, as a list is often written.
    assert sweep_plan.expand_suite(f'{TASK.format(3)}, cube-single ') == [TASK.format(k) for k in (3, 1, 2, 4, 5)]


def test_dry_run_groups_seeds_skips_finished_runs_and_estimates_gpu_hours(tmp_path, capsys):
    finished = tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed0'
    finished.mkdir(parents=True)
    (finished / 'final.json').write_text('{}')
    args = ['--suite', 'cube-single', '--agent', 'fav', '--seeds', '0-1', '--runs-dir', str(tmp_path), '--dry-run']
    assert sweep.main([*args, '--offline-steps', '2124', '--agent.hidden_dims=64,64']) == 0
    out = capsys.readouterr().out.splitlines()
    # 9 runs to do, in groups of 1 or 2 (estimated at one run's rate) × 2124 updates at 1062 updates/s = 18 s.
    assert out[0] == (
        '5 job(s) of 10 offline run(s) (--group seeds); 1 run(s) already finished, 9 to run in 5 job(s) '
        "(about 0.01 GPU-hours on an H100 at FAV's measured rates)"
    )
    commands = out[1:]
    assert len(commands) == 5
    for k, command in enumerate(commands, 1):  # the CLI skips the group's finished run itself
        assert command == (
            f'python launch/offline.py --env {TASK.format(k)} --agent fav --seeds 0-1 --runs-dir {tmp_path} '
            '--no-progress --offline-steps 2124 --agent.hidden_dims=64,64'
        )
    # Run by run, as before groups: the finished run has no job, nor has a run stopped on non-finite values.
    stopped = tmp_path / 'offline' / TASK.format(5) / 'fav' / 'seed1'
    stopped.mkdir(parents=True)
    (stopped / 'stopped.json').write_text('{"error": "non-finite critic_loss"}')
    assert sweep.main([*args, '--group', 'none', '--offline-steps', '2124']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('10 job(s) of 10 offline run(s) (--group none); 1 run(s) already finished, 8 to run in 8')
    assert out[1].startswith('1 run(s) stopped on non-finite values are left alone (delete their stopped.json')
    assert not any(f'--run-dir {stopped} ' in line for line in out)
    assert out[2] == (
        f'python launch/offline.py --env {TASK.format(1)} --agent fav --seed 1 --run-dir '
        f'{tmp_path}/offline/{TASK.format(1)}/fav/seed1 --no-progress --offline-steps 2124'
    )


def test_the_estimate_counts_the_runs_left_at_the_rate_of_as_many(tmp_path, capsys):
    for seed in (0, 1, 2):
        finished = tmp_path / 'offline' / TASK.format(1) / 'fav' / f'seed{seed}'
        finished.mkdir(parents=True)
        (finished / 'final.json').write_text('{}')
    argv = ['--suite', TASK.format(1), '--seeds', '0-3', '--runs-dir', str(tmp_path), '--dry-run']
    assert sweep.main([*argv, '--offline-steps', '3823200']) == 0
    # The group's one run left: 3,823,200 updates at one run's 1062 updates/s = 1 hour.
    assert 'about 1.00 GPU-hours' in capsys.readouterr().out.splitlines()[0]


def test_a_stopped_run_of_a_group_is_neither_finished_nor_left_to_run(tmp_path, capsys):
    stopped = tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed0'
    stopped.mkdir(parents=True)
    (stopped / 'stopped.json').write_text('{"error": "non-finite critic_loss"}')
    argv = ['--suite', TASK.format(1), '--seeds', '0-1', '--runs-dir', str(tmp_path), '--dry-run']
    assert sweep.main([*argv, '--offline-steps', '3823200']) == 0
    # Seed 1 is the one run left: 3,823,200 updates at one run's 1062 updates/s = 1 hour.
    head = capsys.readouterr().out.splitlines()[0]
    assert '0 run(s) already finished, 1 to run in 1 job(s) (about 1.00 GPU-hours' in head


def test_the_o2o_estimate_counts_the_online_steps_at_the_env_step_rate(tmp_path, capsys):
    argv = ['--suite', TASK.format(1), '--mode', 'o2o', '--seeds', '0', '--runs-dir', str(tmp_path), '--dry-run']
    assert sweep.main([*argv, '--offline-steps', '3823200', '--online-steps', '432000']) == 0
    # 3,823,200 updates at 1062 updates/s = 1 hour, then 432,000 env steps at 120 env steps/s = 1 hour.
    assert 'about 2.00 GPU-hours' in capsys.readouterr().out.splitlines()[0]


def test_a_group_between_measured_sizes_is_estimated_at_the_rate_of_the_largest_size_below(tmp_path, capsys):
    argv = ['--suite', TASK.format(1), '--mode', 'o2o', '--seeds', '0-6', '--runs-dir', str(tmp_path), '--dry-run']
    assert sweep.main([*argv, '--offline-steps', '7128000', '--online-steps', '432000']) == 0
    # 7 runs: offline at 4 runs' 1980 updates/s, 7 × 7,128,000 / 1980 s = 7 h (not at 8 runs' 2279/s, the nearest
    # measured size); online at one run's 120 env steps/s, 7 × 432,000 / 120 s = 7 h (not at 8 runs' 745/s).
    assert 'about 14.00 GPU-hours' in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize(
    'group, jobs, hours',
    [
        # 30 groups of 8 seeds: 30 × 8 × (1M / 2279 + 1M / 745) s = 118.74 h.
        ('seeds', 30, '118.74'),
        # 240 runs alone: 240 × (1M / 1062 + 1M / 120) s = 618.33 h.
        ('none', 240, '618.33'),
    ],
)
def test_the_paper_o2o_suite_estimate_by_grouping(group, jobs, hours, tmp_path, capsys):
    assert sweep.main(['--suite', 'o2o30', '--group', group, '--runs-dir', str(tmp_path), '--dry-run']) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith(f'{jobs} job(s) of 240 o2o run(s) (--group {group})') and f'about {hours} GPU-hours' in head


def test_family_groups_take_whole_families_only(tmp_path, capsys):
    suite = f'{TASK.format(1)},cube-double,antmaze-large-play-v2'
    argv = ['--suite', suite, '--agent', 'fav', '--agent', 'iql', '--seeds', '0,2', '--group', 'family']
    assert sweep.main([*argv, '--runs-dir', str(tmp_path), '--dry-run']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('6 job(s) of 28 offline run(s) (--group family)')
    tail = f'--seeds 0,2 --runs-dir {tmp_path} --no-progress'
    assert out[1:] == [
        f'python launch/offline.py --env {TASK.format(1)} --agent fav {tail}',  # one task of its family
        f'python launch/offline.py --env {TASK.format(1)} --agent iql {tail}',
        f'python launch/offline.py --env cube-double --task all --agent fav {tail}',  # all 5: 10 runs
        f'python launch/offline.py --env cube-double --task all --agent iql {tail}',
        f'python launch/offline.py --env antmaze-large-play-v2 --agent fav {tail}',  # a D4RL family of one task
        f'python launch/offline.py --env antmaze-large-play-v2 --agent iql {tail}',
    ]
    runs = sweep_plan.plan(sweep.build_parser().parse_args(argv), [])[1]
    jobs = sweep_plan.make_jobs(runs, (), 'family', str(tmp_path))
    assert [job.name for job in jobs][2] == 'offline/cube-double/fav/seeds0,2'
    assert [len(job.runs) for job in jobs] == [2, 2, 10, 10, 2, 2]


def test_a_family_with_some_of_its_tasks_is_grouped_by_task(tmp_path, capsys):
    """Two of cube-single's five tasks: one job per task, not one `--task all` job training all five."""
    argv = ['--suite', f'{TASK.format(1)},{TASK.format(2)}', '--seeds', '0-1', '--group', 'family']
    assert sweep.main([*argv, '--runs-dir', str(tmp_path), '--dry-run']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('2 job(s) of 4 offline run(s) (--group family)')
    tail = f'--seeds 0-1 --runs-dir {tmp_path} --no-progress'
    assert out[1:] == [f'python launch/offline.py --env {TASK.format(k)} --agent fav {tail}' for k in (1, 2)]


def test_rlpd_is_swept_in_o2o_mode_only(tmp_path, capsys):
    argv = ['--suite', TASK.format(2), '--agent', 'rlpd', '--seeds', '0-2', '--runs-dir', str(tmp_path), '--dry-run']
    assert sweep.main([*argv, '--mode', 'o2o']) == 0
    command = capsys.readouterr().out.splitlines()[1]
    assert command.startswith(f'python launch/o2o.py --env {TASK.format(2)} --agent rlpd --seeds 0-2 ')
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'rlpd trains online from scratch' in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize('steps', [['--offline-steps', '200'], ['--offline-steps=200']])
def test_an_o2o_sweep_gives_its_offline_steps_to_every_agent_but_rlpd(steps, tmp_path, capsys):
    """RLPD has no offline phase and its CLI refuses --offline-steps: the sweep was refused as a whole, so one
    short O2O sweep could not compare RLPD with FAV."""
    argv = ['--suite', TASK.format(2), '--mode', 'o2o', '--agent', 'fav', '--agent', 'rlpd', '--seeds', '0-1']
    assert sweep.main([*argv, *steps, '--online-steps', '300', '--runs-dir', str(tmp_path), '--dry-run']) == 0
    fav, rlpd = capsys.readouterr().out.splitlines()[1:]
    tail = f'--seeds 0-1 --runs-dir {tmp_path} --no-progress'
    assert fav == f'python launch/o2o.py --env {TASK.format(2)} --agent fav {tail} {" ".join(steps)} --online-steps 300'
    assert rlpd == f'python launch/o2o.py --env {TASK.format(2)} --agent rlpd {tail} --online-steps 300'


@pytest.mark.parametrize(
    'argv, words',
    [
        (['--suite', 'cube-singel'], 'unknown environment'),
        (['--suite', 'offline5'], '(or a suite: offline56, o2o30)'),  # a suite's name mistyped
        (['--suite', 'cube-single', '--seeds', 'a-b'], '--seeds a-b'),
        (['--suite', 'cube-single', '--seeds', '0,5-3'], '--seeds 0,5-3: expected seeds like 0-7'),  # not only 0
        (['--suite', 'cube-single', '--seeds', '0-4294967296'], 'seeds must be < 4294967296'),  # refused, not listed
        (['--suite', 'offline56,o2o30'], 'sweep them one at a time'),
        (['--suite', 'cube-single', '--seed', '1'], '--seed is set by the sweep'),
        (['--suite', 'cube-single', '--agent.nope=1'], 'unknown agent setting --agent.nope'),
        # Checked for every agent of the sweep, not only the first: IQL has no sigma.
        (['--suite', 'cube-single', '--agent', 'fav', '--agent', 'iql', '--agent.sigma=0.1'], '--agent.sigma'),
        # The agent that lacks it is named: the valid settings listed are that agent's.
        (['--suite', 'cube-single', '--agent', 'fav', '--agent', 'fql', '--agent.alpha=3'], 'alpha for --agent fav;'),
        # The agents' own checks for every agent too: FQL takes flow_steps, FAV refuses it without its BC flow.
        (
            ['--suite', 'cube-single', '--agent', 'fql', '--agent', 'fav', '--agent.flow_steps=5'],
            'agent.flow_steps is used only with agent.reference=bc_flow',
        ),
        # And for every environment of the suite: cube-single's data can be generated, antmaze-large's cannot.
        (['--suite', 'cube-single,antmaze-large', '--dataset-episodes', '3'], '--dataset-episodes: antmaze-large'),
        # The CLI's value checks too, once for the sweep rather than failing in every job.
        (['--suite', 'cube-single', '--eval-every', '0'], '--eval-every must be >= 1'),
        (['--suite', 'cube-single', '--agent.sigma=-1'], 'sigma'),  # the agent's own checks
        (['--suite', 'antmaze-umaze-v2', '--dataset-episodes', '3'], 'D4RL AntMaze reads its datasets'),
        (['--suite', 'cube-single', '--local-cpus', '0'], 'cannot give a job --cpus-per-job 1.0: pass a smaller'),
        # Each resource flag on its own, with the value given.
        (['--suite', 'cube-single', '--max-retries', '-1'], 'error: --max-retries must be >= 0, got -1'),
        (['--suite', 'cube-single', '--cpus-per-job', '0'], 'error: --cpus-per-job must be > 0 and finite, got 0'),
        (['--suite', 'cube-single', '--cpus-per-job', 'nan'], 'error: --cpus-per-job must be > 0 and finite, got nan'),
        (['--suite', 'cube-single', '--address', 'auto', '--cpus-per-job', 'inf'], '--cpus-per-job must be > 0 and'),
        (['--suite', 'cube-single', '--gpus-per-job', '-0.5'], 'error: --gpus-per-job must be >= 0 and finite, got'),
        (['--suite', 'cube-single', '--gpus-per-job', 'inf'], 'error: --gpus-per-job must be >= 0 and finite, got'),
        (['--suite', 'cube-single', '--address', 'auto', '--no-ray'], 'error: --address auto asks for a Ray cluster'),
        # Ray's own bounds, which it raised in a traceback once the cluster had started.
        (['--suite', 'cube-single', '--cpus-per-job', '0.00001'], 'error: --cpus-per-job 1e-05: Ray takes shares of'),
        (['--suite', 'cube-single', '--gpus-per-job', '0.00001'], 'error: --gpus-per-job 1e-05: Ray takes shares of'),
        (['--suite', 'cube-single', '--local-cpus', str(10**20)], f'error: --local-cpus {10**20}: Ray takes at most'),
        # An empty --address (an unset variable) was a local cluster: the jobs ran here, not on the cluster meant.
        (['--suite', 'cube-single', '--address', ''], 'error: --address is empty: give auto or HOST:6379'),
        # What to give the sweep instead, for the setting given (not a hint about seeds).
        (['--suite', 'cube-single', '--resume'], '--resume is set by the sweep per run; drop it (a rerun of the sweep'),
        (['--suite', 'cube-single', '--list-tasks', 'offline'], "drop it (a suite's tasks: launch/offline.py --list"),
        (['--suite', 'cube-single', '--run-dir=r'], '--run-dir is set by the sweep per run; drop it (run directories'),
    ],
)
def test_bad_settings_one_line(argv, words, tmp_path, capsys):
    assert sweep.main([*argv, '--runs-dir', str(tmp_path), '--dry-run']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not any(tmp_path.iterdir())


def test_an_empty_runs_dir_is_refused_not_read_as_the_working_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sweep.main(['--suite', 'cube-single', '--runs-dir', '', '--dry-run']) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'error: --runs-dir is empty: give a folder, or leave --runs-dir out for the default (runs)'


def test_a_group_with_one_run_started_with_other_settings_is_refused_up_front(tmp_path, capsys):
    started = tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed1'  # seed 0 of the group not started yet
    started.mkdir(parents=True)
    (started / 'config.json').write_text(json.dumps(dict(mode='offline', seed=1, offline_steps=300)))
    (started / 'checkpoint.msgpack').write_bytes(b'')  # it trained: a rerun would go on from its checkpoint
    argv = ['--suite', TASK.format(1), '--seeds', '0-1', '--runs-dir', str(tmp_path), '--dry-run']
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f'{started} holds a run with other settings: ' in err
    assert 'offline_steps=300 (now 1000000)' in err
    # Without a checkpoint the start kept nothing: the job will start it again with the sweep's settings.
    (started / 'checkpoint.msgpack').unlink()
    assert sweep.main(argv) == 0
    assert f'note: {started} kept nothing of its earlier start (no checkpoint yet)' in capsys.readouterr().out


def test_a_gpu_share_the_local_cluster_cannot_give_is_one_line_not_a_wait(dataset, tmp_path):
    import ray  # noqa: F401  (the test extra installs it: the check is made on the cluster Ray starts)

    command = [sys.executable, 'launch/sweep.py', '--suite', TASK.format(1), '--seeds', '0', '--gpus-per-job', '1']
    command += ['--runs-dir', str(tmp_path / 'runs'), '--local-cpus', '1', '--no-progress', '--dataset', dataset]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr  # Ray's own start-up lines may come first
    assert result.stderr.strip().splitlines()[-1] == (
        'error: the local Ray cluster has 0 GPU(s), so no job can get --gpus-per-job 1; pass --gpus-per-job 0, '
        'or --address of a cluster with GPUs'
    )
    assert not (tmp_path / 'runs' / 'offline').exists()  # no run was started


def test_a_runs_dir_through_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / 'notes.txt').write_text('kept')
    assert sweep.main(['--suite', 'cube-single', '--runs-dir', str(tmp_path / 'notes.txt' / 'runs'), '--no-ray']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'notes.txt is a file' in err
    assert (tmp_path / 'notes.txt').read_text() == 'kept'


@pytest.mark.parametrize(
    'argv, words',
    [
        (['--suite', 'antmaze-large', '--dataset-episodes', '3'], '--dataset-episodes: antmaze-large-navigate data'),
        (['--suite', 'antmaze-umaze-v2', '--dataset-episodes', '3'], '--dataset-episodes generates OGBench'),
        (['--suite', 'cube-single', '--dataset', 'nowhere.npz'], '--dataset nowhere.npz: no such file or folder'),
        # An OGBench task reads a train .npz with its -val file beside it, never a folder (a Minari dataset is one).
        (['--suite', 'cube-single', '--dataset', 'folder'], '--dataset {tmp}/folder is a folder: pass its train .npz'),
        (['--suite', 'cube-single', '--dataset', 'lone.npz'], 'dataset file {tmp}/lone-val.npz does not exist'),
    ],
)
def test_settings_every_job_would_fail_on_are_refused_before_the_jobs(argv, words, tmp_path, capsys, monkeypatch):
    """They started one job per task, each failing on them (exit 1, with logs left behind); the dry run
    listed them as jobs to run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'lone.npz').write_bytes(b'')
    words = words.format(tmp=os.getcwd())  # the resolved folder, as abspath reads it
    for dry_run in ([], ['--dry-run']):
        assert sweep.main([*argv, '--runs-dir', str(tmp_path / 'runs'), '--no-ray', *dry_run]) == 2
        assert _one_line_error(capsys).startswith(f'error: {words}')
    assert not (tmp_path / 'runs').exists()


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize('content', ['{"x":', '[]'])
def test_a_damaged_config_json_is_one_line(content, tmp_path, capsys):
    config = tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed0' / 'config.json'
    config.parent.mkdir(parents=True)
    config.write_text(content)
    assert sweep.main(['--suite', TASK.format(1), '--seeds', '0', '--runs-dir', str(tmp_path), '--dry-run']) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f'error: {config} ') and 'JSON' in err


@pytest.mark.parametrize('name', ['final.json', 'stopped.json'])
@pytest.mark.parametrize('content', ['{"score":', '[]'])
def test_a_damaged_final_or_stopped_json_is_refused_not_counted_as_done(name, content, tmp_path, capsys):
    """As the CLI (and launch/tables.py) refuses it: the run would otherwise be skipped as done here, and
    its group's job would fail on it."""
    path = tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed0' / name
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert sweep.main(['--suite', TASK.format(1), '--seeds', '0-1', '--runs-dir', str(tmp_path), '--dry-run']) == 2
    out, err = capsys.readouterr()
    assert out == '' and len(err.strip().splitlines()) == 1
    assert err.startswith(f'error: {path} ') and 'JSON' in err


def _fake_ray(monkeypatch, **functions):
    """`import ray` gives a module of `functions` only: a call of anything else fails the test."""
    monkeypatch.setitem(sys.modules, 'ray', types.SimpleNamespace(**functions))


def _sweep_one_run(runs_dir, *argv):
    return sweep.main(['--suite', TASK.format(1), '--seeds', '0', '--runs-dir', str(runs_dir), '--no-progress', *argv])


def test_an_address_without_a_ray_cluster_is_one_line(tmp_path, capsys, monkeypatch):
    def init(**kwargs):  # what ray.init does for 'auto' with no cluster, at once
        raise ConnectionError('Could not find any running Ray instance. Please specify the one\nto connect to')

    _fake_ray(monkeypatch, init=init)
    assert _sweep_one_run(tmp_path / 'runs', '--address', 'auto') == 2
    assert _one_line_error(capsys) == (
        'error: no Ray cluster at --address auto (Could not find any running Ray instance. Please specify the one); '
        'start one with `ray start --head`, or leave out --address for a local one'
    )
    assert not (tmp_path / 'runs').exists()


def test_a_host_and_port_where_nothing_listens_is_one_line_not_minutes_of_retries(tmp_path, capsys, monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(kwargs['address'])
        raise ConnectionError('reached ray.init')

    _fake_ray(monkeypatch, init=init)
    with socket.socket() as port:  # bound, not listening: a connection is refused
        port.bind(('127.0.0.1', 0))
        address = f'127.0.0.1:{port.getsockname()[1]}'
        assert _sweep_one_run(tmp_path / 'runs', '--address', address) == 2
        err = _one_line_error(capsys)
        assert err.startswith(f'error: no Ray cluster at --address {address} (') and 'ray start --head' in err
        assert calls == []  # refused before ray.init, which would retry it for minutes
        port.listen()  # something listens there now: left to ray.init
        assert _sweep_one_run(tmp_path / 'runs', '--address', address) == 2
        assert calls == [address] and 'reached ray.init' in _one_line_error(capsys)
    assert not (tmp_path / 'runs').exists()


def test_an_address_without_ray_installed_is_refused_not_run_here(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'ray', None)  # `import ray` raises ImportError
    monkeypatch.setattr(sweep, 'run_jobs_in_turn', None)  # running the jobs here would fail the test
    assert _sweep_one_run(tmp_path / 'runs', '--address', 'auto') == 2
    err = _one_line_error(capsys)
    assert err.startswith('error: --address auto needs Ray, which is not installed: pip install -e ".[sweep]"')
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('runner', ['in turn', 'ray'])
@pytest.mark.parametrize('blocker', ['immutable', 'a file named logs'])
def test_a_runs_dir_that_cannot_be_written_is_one_line(runner, blocker, tmp_path, capsys, monkeypatch):
    runs_dir = tmp_path / 'runs'
    runs_dir.mkdir()
    if blocker == 'a file named logs':
        (runs_dir / 'logs').write_text('kept')
    elif subprocess.run(['chattr', '+i', str(runs_dir)], capture_output=True).returncode:
        pytest.skip('chattr +i needs root and a file system that has it (chmod does not stop root)')
    # On Ray, refused before any job is submitted: no remote is given.
    _fake_ray(monkeypatch, init=lambda **kwargs: None, cluster_resources=lambda: {'CPU': 2.0})
    try:
        assert _sweep_one_run(runs_dir, *(['--no-ray'] if runner == 'in turn' else [])) == 2
    finally:
        subprocess.run(['chattr', '-i', str(runs_dir)], capture_output=True)
    err = _one_line_error(capsys)
    if blocker == 'a file named logs':
        assert err.startswith(f'error: {runs_dir / "logs"}')  # or a folder below it
    else:  # refused before planning the jobs
        assert err.startswith(f'error: --runs-dir {runs_dir}: cannot write in {runs_dir} (')
    assert [p.name for p in runs_dir.iterdir()] == (['logs'] if blocker == 'a file named logs' else [])


def _kill_lock_holders(runs_dir):
    """SIGKILLs the runs still training under `runs_dir` (the pids their run.lock names), as a crash of
    their node would; returns once no run lock is held."""
    from launch.run_lock import RunLockedError, run_lock

    deadline = time.time() + 60
    while time.time() < deadline:
        held = []
        for lock in runs_dir.rglob('run.lock'):
            try:
                with run_lock(str(lock.parent)):
                    pass
            except RunLockedError:
                held.append(json.loads(lock.read_text())['pid'])
        if not held:
            return
        for pid in held:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    raise AssertionError('run locks still held a minute after the kill')


@pytest.mark.slow
def test_ray_sweep_killed_midway_then_rerun_redoes_and_loses_nothing(dataset, tmp_path):
    import ray  # noqa: F401  (the test extra installs it; without it the sweep would run the jobs in turn)

    runs_dir = tmp_path / 'runs'
    # Two jobs (a task's two seeds as one group each), one at a time: the kill comes after the first.
    command = [sys.executable, 'launch/sweep.py', '--suite', f'{TASK.format(1)},{TASK.format(2)}', '--seeds', '0-1']
    command += ['--runs-dir', str(runs_dir), '--local-cpus', '1', '--no-progress', '--dataset', dataset]
    command += '--offline-steps 20 --eval-every 20 --save-every 5 --log-every 5 --updates-per-call 1'.split()
    command += '--eval-episodes 1 --eval-envs 1 --agent.hidden_dims=16,16 --agent.batch_size=8'.split()
    finals = [runs_dir / 'offline' / TASK.format(t) / 'fav' / f'seed{s}' / 'final.json' for t in (1, 2) for s in (0, 1)]

    first = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not any(f.exists() for f in finals):
        time.sleep(0.2)
    assert first.poll() is None, first.stdout.read().decode()
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and the processes of its session
    first.wait()
    _kill_lock_holders(runs_dir)  # and the runs Ray's workers had started (other sessions)
    done_before = {f: f.stat().st_mtime_ns for f in finals if f.exists()}
    assert 1 <= len(done_before) < 4

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f'{len(done_before)} run(s) already finished, {4 - len(done_before)} to run' in rerun.stdout
    assert {f: f.stat().st_mtime_ns for f in finals if f in done_before} == done_before  # nothing redone
    for f in finals:  # nothing lost: every run finished with its two evaluations
        assert json.loads(f.read_text())['steps'] == 20
        steps = [line.split(',')[0] for line in (f.parent / 'eval.csv').read_text().splitlines()[1:]]
        assert steps == ['1', '20']

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and '4 run(s) already finished, 0 to run in 0 job(s)' in again.stdout
    # Other settings over the same finished runs are refused (the CLI's check), not counted as finished.
    longer = [*command, '--offline-steps', '40']  # the last value given is the one read
    other = subprocess.run(longer, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and 'already finished' not in other.stdout, other.stdout + other.stderr
    assert other.stderr.strip().count('\n') == 0 and 'holds a run with other settings: offline_steps=20 (now 40)' in (
        other.stderr
    )
    logs = sorted(p.relative_to(runs_dir).as_posix() for p in (runs_dir / 'logs').rglob('*.log'))
    assert logs == [f'logs/offline/{TASK.format(t)}/fav/seeds0-1.log' for t in (1, 2)]


@pytest.mark.parametrize('stop', ['SIGINT', 'SIGTERM'])
def test_ctrl_c_or_sigterm_stops_a_sweep_and_its_run_in_one_line(stop, dataset, tmp_path):
    """Ctrl-C in a terminal reaches the sweep and its runs (their process group); SIGTERM, as a scheduler sends
    it, the sweep alone, which ended without a word (exit 143) or with Ray's stack dump (exit 1)."""
    from launch.run_lock import RunLockedError, run_lock

    runs_dir = tmp_path / 'runs'
    command = [sys.executable, 'launch/sweep.py', '--suite', TASK.format(1), '--seeds', '0', '--no-ray']
    command += ['--runs-dir', str(runs_dir), '--no-progress', '--dataset', dataset, '--offline-steps', '1000000']
    command += '--eval-episodes 1 --eval-envs 1 --agent.hidden_dims=16,16 --agent.batch_size=8'.split()
    run_dir = runs_dir / 'offline' / TASK.format(1) / 'fav' / 'seed0'
    with process_group(command, stderr=subprocess.PIPE, text=True) as sweep_process:
        deadline = time.time() + 120
        while time.time() < deadline and not (run_dir / 'config.json').exists():
            time.sleep(0.1)
        assert (run_dir / 'config.json').exists(), 'the run did not start'
        if stop == 'SIGINT':
            os.killpg(sweep_process.pid, signal.SIGINT)
        else:
            sweep_process.send_signal(signal.SIGTERM)
        _, err = sweep_process.communicate(timeout=300)  # a guard against a hang, not a speed check
    code, word = (130, 'interrupted') if stop == 'SIGINT' else (143, 'terminated')
    assert sweep_process.returncode == code and 'Traceback' not in err, err
    last = err.strip().splitlines()[-1]
    assert (
        last
        == f'{word}: rerun the same command to go on (finished runs are kept, the others resume from their checkpoints)'
    )
    if stop == 'SIGTERM':
        assert len(err.strip().splitlines()) == 1, err
    deadline = time.time() + 60  # the run stops with the sweep (a SIGTERM'd sweep's run is killed with its parent)
    while True:
        try:
            with run_lock(str(run_dir)):  # its lock is free
                break
        except RunLockedError:
            assert time.time() < deadline, 'the run outlived the sweep'
            time.sleep(0.2)


def test_generated_data_goes_to_the_loaders_default_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_plan.generate, 'DEFAULT_DATASET_DIR', str(tmp_path / 'data'))
    args = sweep.build_parser().parse_args(['--suite', 'cube-single', '--seeds', '0'])
    passed = ['--dataset-episodes', '3']  # and no --dataset-dir
    _, runs, _ = sweep_plan.plan(args, passed)
    (command,) = sweep_plan.data_preparations(
        runs, sweep_plan.parse_passed_settings('offline', passed, runs)['fav']
    ).values()
    assert command[command.index('--out') + 1] == str(tmp_path / 'data' / 'generated' / 'ep3-seed0')


def test_a_generated_dataset_without_its_validation_file_is_generated_again(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_plan.generate, 'DEFAULT_DATASET_DIR', str(tmp_path / 'data'))
    args = sweep.build_parser().parse_args(['--suite', 'cube-single', '--seeds', '0'])
    passed = ['--dataset-episodes', '3']
    _, runs, _ = sweep_plan.plan(args, passed)
    cli = sweep_plan.parse_passed_settings('offline', passed, runs)['fav']
    directory = tmp_path / 'data' / 'generated' / 'ep3-seed0'
    directory.mkdir(parents=True)
    train, val = sweep_plan.generate.output_paths(FAMILIES['cube-single-play'], directory)
    train.write_bytes(b'')
    val.write_bytes(b'')
    assert sweep_plan.data_preparations(runs, cli) == {}  # both files there: nothing to generate
    val.unlink()
    assert list(sweep_plan.data_preparations(runs, cli)) == ['cube-single-play']


def test_a_relative_dataset_dir_is_generated_where_the_sweep_was_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the generation runs in the repository, not here
    args = sweep.build_parser().parse_args(['--suite', 'cube-single', '--seeds', '0'])
    passed = ['--dataset-episodes', '3', '--dataset-dir', 'data']
    _, runs, _ = sweep_plan.plan(args, passed)
    (command,) = sweep_plan.data_preparations(
        runs, sweep_plan.parse_passed_settings('offline', passed, runs)['fav']
    ).values()
    assert command[command.index('--out') + 1] == str(tmp_path / 'data' / 'generated' / 'ep3-seed0')


def test_backend_reaches_the_d4rl_jobs_only_and_paths_become_absolute(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # jobs run in the repository: a relative path must not reach them as it is
    suite = f'{TASK.format(1)},antmaze-umaze-v2'
    argv = ['--suite', suite, '--seeds', '0', '--runs-dir', str(tmp_path), '--dry-run', '--backend', 'minari']
    assert sweep.main([*argv, '--dataset-dir', 'data']) == 0
    ogbench, d4rl = capsys.readouterr().out.splitlines()[1:]
    assert ogbench.endswith(f'--no-progress --dataset-dir {tmp_path / "data"}')
    assert d4rl.endswith(f'--no-progress --backend minari --dataset-dir {tmp_path / "data"}')
    with pytest.raises(SystemExit) as exit:  # still checked up front, on a D4RL task, by the CLI's own parser
        sweep.main([*argv[:-2], '--backend', 'tpu'])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "invalid choice: 'tpu'" in err and len(err.strip().splitlines()) == 1


def test_a_failed_data_preparation_stops_only_the_jobs_that_need_it(tmp_path, monkeypatch):
    scene = 'scene-play-singletask-task2-v0'
    suite = ['--suite', f'{TASK.format(1)},{scene}', '--seeds', '0', '--no-progress', '--runs-dir', str(tmp_path)]
    args = sweep.build_parser().parse_args(suite)
    _, _, jobs = sweep_plan.plan(args, [])
    real_run, ran = sweep.run_command, []

    def run(arguments, log, *after):  # the generation fails; the jobs would succeed
        if arguments[:2] == ['-m', 'datasets.generate']:
            return 1, 'no space left on device'
        ran.append(arguments[2])  # its task (launch/offline.py --env TASK ...)
        if any(code for code, _ in after):
            return real_run(arguments, log, *after)  # returns before it starts anything
        return 0, 'done'

    monkeypatch.setattr(sweep, 'run_command', run)
    failures = sweep.run_jobs_in_turn(jobs, {'cube-single-play': ['-m', 'datasets.generate']}, args, str(tmp_path))
    failed = {job.runs[0].task: result for job, result in failures.items()}
    assert failed == {TASK.format(1): (1, 'its data preparation failed: no space left on device')}
    assert ran == [TASK.format(1), scene]  # tried once (no retries after a failed preparation), then the other
    assert not list(tmp_path.rglob('*.log'))  # the real run_command started nothing for the first job
    assert sweep.log_path(jobs[1]).endswith(f'logs/offline/{scene}/fav/seed0.log')


def test_jobs_in_turn_end_with_the_progress_counts_settled(tmp_path, monkeypatch):
    args = sweep.build_parser().parse_args(['--suite', 'cube-single', '--seeds', '0', '--runs-dir', str(tmp_path)])
    args.max_retries, args.progress = 0, False
    _, _, jobs = sweep_plan.plan(args, [])
    outcomes = iter([(0, 'done'), (1, 'diverged'), (0, 'done'), (0, 'done'), (0, 'done')])
    monkeypatch.setattr(sweep, 'run_command', lambda arguments, log, *after: next(outcomes))
    bars = []
    monkeypatch.setattr(sweep, 'Progress', lambda *a, **k: bars.append(Progress(*a, **k)) or bars[-1])
    failures = sweep.run_jobs_in_turn(jobs, {}, args, str(tmp_path))
    assert len(jobs) == 5 and [result for result in failures.values()] == [(1, 'diverged')]
    assert bars[0].counts == dict(done=5, running=0, queued=0, failed=1)


# run_command forks with a preexec_fn (its child dies with the sweep), and JAX warns at every fork; the child
# only sets that before it execs, so the warning does not apply.
@pytest.mark.filterwarnings('ignore:os.fork\\(\\) was called:RuntimeWarning')
def test_a_job_log_keeps_every_try_and_the_report_is_its_last_line(tmp_path):
    log = tmp_path / 'logs' / 'job.log'
    failing = 'print("loading data"); print("critic diverged", flush=True); raise SystemExit(3)'
    assert sweep.run_command(['-c', failing], str(log)) == (3, 'critic diverged')
    # The retry resumes in the same log: the failed try's lines stay; blank lines at the end are no report.
    assert sweep.run_command(['-c', 'print("resumed"); print("done"); print(); print("  ")'], str(log)) == (0, 'done')
    assert log.read_text().split() == ['loading', 'data', 'critic', 'diverged', 'resumed', 'done']


@pytest.mark.filterwarnings('ignore:os.fork\\(\\) was called:RuntimeWarning')
def test_a_data_preparation_killed_by_a_signal_stops_the_jobs_that_wait_on_it(tmp_path):
    """Killed (e.g. by the OOM killer), the generation exits with a negative code: its jobs must not start
    on the half-written data."""
    kill = ['-c', 'import os, signal; os.kill(os.getpid(), signal.SIGKILL)']
    preparation = sweep.run_command(kill, str(tmp_path / 'logs' / 'data.log'))
    assert preparation[0] == -signal.SIGKILL
    job_log = tmp_path / 'logs' / 'job.log'
    code, last = sweep.run_command(['-c', 'print("trained")'], str(job_log), preparation)
    assert code == -signal.SIGKILL and last.startswith('its data preparation failed')
    assert not job_log.exists()


@pytest.mark.parametrize('retries', [0, 2])
def test_a_failing_job_is_tried_once_plus_max_retries_and_the_sweep_exits_1(retries, tmp_path, capsys, monkeypatch):
    tries = []
    monkeypatch.setattr(sweep, 'run_command', lambda arguments, log, *after: tries.append(log) or (1, 'diverged'))
    assert _sweep_one_run(tmp_path, '--no-ray', '--max-retries', str(retries)) == 1
    assert len(tries) == retries + 1
    assert capsys.readouterr().out.splitlines()[-1].startswith(f'failed (exit 1): offline/{TASK.format(1)}/fav/seed0')
    outcomes = iter([(1, 'diverged'), (0, 'done')])  # the retry resumes and finishes: the sweep succeeded
    monkeypatch.setattr(sweep, 'run_command', lambda arguments, log, *after: next(outcomes))
    assert _sweep_one_run(tmp_path, '--no-ray', '--max-retries', '1') == 0
    assert '1 of 1 job(s) finished' in capsys.readouterr().out


def test_a_finished_run_beside_a_stopped_marker_counts_as_finished(tmp_path, capsys):
    """final.json decides, as the CLI (launch/loop.py) and launch/results.py decide: not a stopped run."""
    run_dir = tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed0'
    run_dir.mkdir(parents=True)
    (run_dir / 'final.json').write_text('{"score": 0.5}')
    (run_dir / 'stopped.json').write_text('[]')  # not read: the run is finished
    assert sweep.main(['--suite', TASK.format(1), '--seeds', '0-1', '--runs-dir', str(tmp_path), '--dry-run']) == 0
    out = capsys.readouterr().out.splitlines()
    assert '1 run(s) already finished, 1 to run in 1 job(s)' in out[0]
    assert not any('stopped on non-finite values' in line for line in out)


def test_suites_that_overlap_sweep_each_task_once(tmp_path, capsys):
    """Two jobs of the same run would train one run directory twice (the second refused by its lock)."""
    suite = f'{TASK.format(2)},cube-single,cube-single-play'
    assert sweep_plan.expand_suite(suite) == [TASK.format(k) for k in (2, 1, 3, 4, 5)]
    assert sweep.main(['--suite', suite, '--seeds', '0', '--runs-dir', str(tmp_path), '--dry-run']) == 0
    assert capsys.readouterr().out.startswith('5 job(s) of 5 offline run(s)')


class _RayError(Exception):
    pass


def test_a_job_whose_ray_worker_died_is_retried_then_reported(monkeypatch):
    """ray.get raising (a worker killed for memory, a lost node) is a failed try, not the sweep's end."""
    outcomes = iter([_RayError('worker died\nunexpectedly'), (0, 'done'), _RayError('node lost')])

    def get(ref):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    fake_ray = types.SimpleNamespace(
        wait=lambda refs, num_returns, timeout: (refs[:1], refs[1:]),
        get=get,
        exceptions=types.SimpleNamespace(RayError=_RayError),
    )
    progress = sweep.Progress(2, enabled=False)
    args = types.SimpleNamespace(max_retries=1)
    first = sweep._collect(fake_ray, {'ref-a': 'job-a'}, progress, args, submit=lambda job: f'ref-{job}-again')
    assert first == {}  # died once, then finished on its retry
    args.max_retries = 0
    second = sweep._collect(fake_ray, {'ref-b': 'job-b'}, sweep.Progress(1, enabled=False), args, submit=None)
    assert second == {'job-b': (1, '_RayError: node lost')}


def test_a_job_refused_for_its_settings_is_not_retried(tmp_path, monkeypatch):
    """Exit code 2 (bad settings, a run held by another process) would end the same way on every try."""
    args = sweep.build_parser().parse_args(['--suite', TASK.format(1), '--seeds', '0', '--runs-dir', str(tmp_path)])
    args.progress = False
    assert args.max_retries == 2
    (job,) = sweep_plan.plan(args, [])[2]
    calls = []
    monkeypatch.setattr(sweep, 'run_command', lambda arguments, log, *after: calls.append(log) or (2, 'error: held'))
    assert sweep.run_jobs_in_turn([job], {}, args, str(tmp_path)) == {job: (2, 'error: held')} and len(calls) == 1
    fake_ray = types.SimpleNamespace(
        wait=lambda refs, num_returns, timeout: (refs[:1], refs[1:]),
        get=lambda ref: (2, 'error: held'),
        exceptions=types.SimpleNamespace(RayError=_RayError),
    )
    resubmitted = []
    failures = sweep._collect(fake_ray, {'ref': 'job'}, Progress(1, enabled=False), args, submit=resubmitted.append)
    assert failures == {'job': (2, 'error: held')} and resubmitted == []


@pytest.mark.parametrize(
    'share, resources, extra, slots',
    [
        ('0', {'CPU': 8.0}, {}, 8),  # CPU-only jobs: 8 at once
        # A quarter of a GPU each: 4 at once, each allocating GPU memory as needed (not 75 % of it each).
        (
            '0.25',
            {'CPU': 8.0, 'GPU': 1.0},
            dict(runtime_env={'env_vars': {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}}),
            4,
        ),
        ('1', {'CPU': 8.0, 'GPU': 1.0}, {}, 1),  # a whole GPU each: one at a time, however many CPUs
    ],
)
def test_ray_jobs_get_their_resources_no_retries_of_rays_own_and_as_many_slots_as_gpus(
    share, resources, extra, slots, tmp_path, monkeypatch
):
    """Ray retries nothing itself (the sweep's retries resume from checkpoints, and count); only jobs sharing a
    GPU allocate its memory as needed; the progress counts as running the jobs the GPUs have room for."""
    submitted, bars = [], []

    class Remote:
        def options(self, **options):
            return types.SimpleNamespace(remote=lambda *arguments: submitted.append(options) or f'ref{len(submitted)}')

    _fake_ray(
        monkeypatch,
        init=lambda **kwargs: None,
        cluster_resources=lambda: resources,
        remote=lambda function: Remote(),
        wait=lambda refs, num_returns, timeout: (refs[:1], refs[1:]),
        get=lambda ref: (0, 'done'),
    )
    monkeypatch.setattr(sweep, 'Progress', lambda *a, **k: bars.append(Progress(*a, **k)) or bars[-1])
    assert _sweep_one_run(tmp_path, '--gpus-per-job', share) == 0
    assert submitted == [dict(num_cpus=1.0, num_gpus=float(share), max_retries=0, **extra)]
    assert bars[0].slots == slots


def test_a_sweep_stopped_by_sigterm_then_ctrl_c_says_each_and_leaves_sigterms_handler_as_it_was(
    tmp_path, capsys, monkeypatch
):
    """In one process (a notebook, a test): the second sweep is interrupted, not terminated as the first."""

    sigterm = iter([True, False])

    def stopped(jobs, preparations, args, runs_dir):
        if next(sigterm):
            os.kill(os.getpid(), signal.SIGTERM)  # the sweep's handler turns it into a KeyboardInterrupt
        raise KeyboardInterrupt

    def own(signum, frame):  # the handler the process had: not the sweep's, which an earlier sweep may have left
        pass

    monkeypatch.setattr(sweep, 'run_jobs_in_turn', stopped)
    previous = signal.signal(signal.SIGTERM, own)
    try:
        for code, word in ((143, 'terminated'), (130, 'interrupted')):
            assert _sweep_one_run(tmp_path, '--no-ray') == code
            assert _one_line_error(capsys).startswith(f'{word}: rerun the same command to go on')
            assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_sigterm_while_the_first_stops_the_sweep_does_not_cut_its_stopping_short(
    tmp_path, capsys, monkeypatch
):
    """`timeout` passes on the SIGTERM its process group got, so the sweep gets two: the second one, raised while
    the first stopped the jobs, cut that short."""
    stopped_jobs = []

    def terminated_twice(jobs, preparations, args, runs_dir):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)
            stopped_jobs.append(True)

    monkeypatch.setattr(sweep, 'run_jobs_in_turn', terminated_twice)
    previous = signal.getsignal(signal.SIGTERM)
    assert _sweep_one_run(tmp_path, '--no-ray') == 143
    assert stopped_jobs and _one_line_error(capsys).startswith('terminated: rerun the same command to go on')
    assert signal.getsignal(signal.SIGTERM) is previous


def test_progress_counts_as_running_only_the_jobs_the_cluster_has_room_for():
    progress = Progress(5, enabled=False, slots=2)
    progress.update(pending=5)
    assert progress.counts == dict(done=0, running=2, queued=3, failed=0)
    progress.update(done=4, pending=1, failed=1)
    assert progress.counts == dict(done=4, running=1, queued=0, failed=1)


@pytest.mark.parametrize('terminal, most_redraws', [(True, 200), (False, 4)])
def test_the_progress_bar_redraws_each_poll_in_a_terminal_and_once_a_minute_in_a_file(
    terminal, most_redraws, monkeypatch
):
    class Stderr(io.StringIO):
        def isatty(self):
            return terminal

    monkeypatch.setattr(sys, 'stderr', Stderr())
    progress = Progress(5, enabled=True)
    clock = iter(range(int(progress.bar.start_t) + 1, 10**12))
    progress.bar._time = lambda: next(clock)  # a second per poll
    for _ in range(120):  # two minutes of the wait for jobs polling
        progress.update(pending=5)
    redraws = sys.stderr.getvalue().count('\r')
    assert (redraws > 100) == terminal and redraws <= most_redraws, redraws
    progress.close()


def test_a_dry_run_from_another_folder_prints_commands_that_run_from_there(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sweep.main(['--suite', TASK.format(1), '--seeds', '0', '--runs-dir', 'runs', '--dry-run']) == 0
    python, script, *rest = capsys.readouterr().out.splitlines()[1].split()
    assert python == 'python' and Path(script).resolve() == sweep.REPO / 'launch' / 'offline.py'
    assert not Path(script).is_absolute()  # relative to the folder the sweep was started in
    assert rest[rest.index('--run-dir') + 1].startswith(str(tmp_path / 'runs'))


def test_an_agent_given_twice_is_swept_once(tmp_path, capsys):
    argv = ['--suite', 'cube-single', '--agent', 'fav', '--agent', 'fav', '--seeds', '0-7', '--dry-run']
    assert sweep.main([*argv, '--runs-dir', str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith('5 job(s) of 40 offline run(s) (--group seeds)')


def test_every_sweep_flag_with_a_default_names_it_in_help():
    for action in sweep.build_parser()._actions:
        if action.default in (None, False, True, argparse.SUPPRESS) or action.default == []:
            continue
        assert f'default: {action.default}' in (action.help or ''), f'{action.option_strings[0]}: {action.help!r}'


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # the swallowed Ctrl-C, reported
def test_a_ctrl_c_python_swallowed_still_stops_the_sweep_before_its_next_job(tmp_path, capsys, monkeypatch):
    """Raised in a garbage-collection callback or a `__del__` (JAX runs one at each collection), a Ctrl-C's
    KeyboardInterrupt is printed as "Exception ignored" and lost: the sweep went on to its next job."""
    started = []

    class InterruptedWhenCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)

    def run_command(arguments, log_path, *after):
        started.append(arguments)
        InterruptedWhenCollected()  # collected at once: the KeyboardInterrupt is raised in __del__ and swallowed
        return 0, 'done'

    monkeypatch.setattr(sweep, 'run_command', run_command)
    assert _sweep_one_run(tmp_path, '--no-ray', '--seeds', '0-1', '--group', 'none') == 130
    assert len(started) == 1  # of two jobs
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith('interrupted: rerun the same command to go on')


@pytest.mark.parametrize('stop, ending', [('SIGINT', (130, 'interrupted')), ('SIGTERM', (143, 'terminated'))])
def test_a_stop_while_the_sweep_imports_ends_it_in_one_line(stop, ending, tmp_path):
    """Raised inside an import (the seconds JAX takes, with the agents), a Ctrl-C was a traceback; it now waits for
    the imports and ends the sweep before it plans anything."""
    program = (
        'import os, runpy, signal, sys\n'
        'class StopAtJax:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        '        if name == "jax":\n'
        '            sys.meta_path.remove(self)\n'
        f'            os.kill(os.getpid(), signal.{stop})\n'
        'sys.meta_path.insert(0, StopAtJax())\n'
        f'sys.argv = ["sweep", "--suite", {TASK.format(1)!r}, "--runs-dir", {str(tmp_path / "runs")!r}, "--no-ray"]\n'
        'runpy.run_path("launch/sweep.py", run_name="__main__")\n'
    )
    done = subprocess.run([sys.executable, '-c', program], cwd=REPO, capture_output=True, text=True, timeout=300)
    code, word = ending
    assert done.returncode == code and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert done.stderr.startswith(f'{word}: rerun the same command to go on')
    assert not (tmp_path / 'runs').exists()


def test_after_the_sweep_a_stop_ends_the_process_again(tmp_path):
    """After main() (Ray's shutdown runs at exit), Ctrl-C and SIGTERM were still only recorded, for main() to raise:
    a hung shutdown could then be ended by SIGKILL alone. The handlers of before the sweep are put back."""
    program = (
        'import atexit, runpy, signal, sys\n'
        'atexit.register(lambda: print("handlers at exit:", signal.getsignal(signal.SIGINT) is '
        'signal.default_int_handler, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL))\n'
        f'sys.argv = ["sweep", "--suite", {TASK.format(1)!r}, "--runs-dir", {str(tmp_path)!r}, "--dry-run"]\n'
        'runpy.run_path("launch/sweep.py", run_name="__main__")\n'
    )
    done = subprocess.run([sys.executable, '-c', program], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == 'handlers at exit: True True'
