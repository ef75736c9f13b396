"""Generated OGBench data: official format, OGBench's loader and relabelling, determinism, safe
interruption, and clear errors for files and names that cannot be used."""

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from datasets import generate, ogbench_data
from datasets.buffer import ACTION_CLIP
from datasets.files import atomic_write, one_writer
from datasets.ogbench_data import DatasetError, find_task_file, load_task_data
from envs.factory import make_env
from envs.pool import EnvWorkerError
from envs.registry import resolve_task

REPO = Path(__file__).resolve().parents[1]
LENGTH = 101  # short episodes keep generation to seconds; the layout is the same as at 1001 steps


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope='module')
def cube_single(tmp_path_factory):
    out = tmp_path_factory.mktemp('cube')
    return generate.generate_dataset(
        'cube-single', str(out), episodes=2, seed=0, workers=1, episode_length=LENGTH, progress=False
    )


def test_generated_files_have_the_official_layout_and_load_with_ogbench(cube_single):
    import ogbench.utils

    train_path, val_path = cube_single
    assert Path(train_path).name == 'cube-single-play-v0.npz' and Path(val_path).name == 'cube-single-play-v0-val.npz'
    raw = _arrays(train_path)
    assert set(raw) == {'observations', 'actions', 'terminals', 'qpos', 'qvel'}
    assert raw['observations'].shape == (2 * LENGTH, 28) and raw['actions'].shape == (2 * LENGTH, 5)
    assert raw['observations'].dtype == np.float32 and raw['terminals'].dtype == bool
    assert np.flatnonzero(raw['terminals']).tolist() == [LENGTH - 1, 2 * LENGTH - 1]
    assert np.abs(raw['actions']).max() <= 1 and raw['actions'].std(0).min() > 0.01
    # Play data moves the cube (qpos 14:17 is its position): the oracle is really acting.
    assert np.ptp(raw['qpos'][:, 14:17], axis=0).max() > 0.02

    train = ogbench.utils.load_dataset(train_path)
    val = ogbench.utils.load_dataset(val_path)
    # OGBench drops each episode's last row (it has no next observation).
    assert train['observations'].shape == (2 * (LENGTH - 1), 28) and val['actions'].shape == (LENGTH - 1, 5)
    np.testing.assert_array_equal(train['next_observations'][0], raw['observations'][1])


def test_a_puzzle_episode_has_the_official_keys_and_dtypes_and_the_oracles_play_noise():
    """The official file format: puzzle files add `button_states` (int64) to the official keys; play data uses the
    oracles with noise 0.1 and noise smoothing 0.5."""
    family = generate.registry.FAMILIES['puzzle-3x3-play']
    episode = generate._run_episode(family, 4, 0)
    assert set(episode) == {'observations', 'actions', 'terminals', 'qpos', 'qvel', 'button_states'}
    assert episode['button_states'].dtype == np.int64 and episode['terminals'].dtype == bool
    assert all(episode[k].dtype == np.float32 for k in ('observations', 'actions', 'qpos', 'qvel'))
    assert len(episode['terminals']) == 4 and episode['terminals'].tolist() == [False, False, False, True]
    _, oracles = generate._collector(family, 4)
    assert [(o._noise, o._noise_smoothing) for o in oracles.values()] == [(0.1, 0.5)] * len(oracles)


def test_each_row_holds_the_state_its_observation_shows(cube_single):
    """A row's qpos and qvel are the state before its action (OGBench's prev_qpos), the one its observation
    was taken in: cube-single's observation starts with the arm's 6 joint positions, then their
    velocities, and holds the cube's position (qpos 14:17) at 19:22, centred and scaled by 10."""
    raw = _arrays(cube_single[0])
    assert np.ptp(raw['qpos'][:LENGTH, :6], axis=0).min() > 0  # the arm moves: each row has a state of its own
    np.testing.assert_array_equal(raw['observations'][:, :6], raw['qpos'][:, :6])
    np.testing.assert_array_equal(raw['observations'][:, 6:12], raw['qvel'][:, :6])
    cube = (raw['qpos'][:, 14:17] - [0.425, 0.0, 0.0]) * 10
    np.testing.assert_allclose(raw['observations'][:, 19:22], cube, atol=1e-5)


def test_each_episode_is_drawn_from_its_own_seed(cube_single):
    """Episodes are seeded from (seed, split, index): two train episodes and the val one all differ."""
    train, val = _arrays(cube_single[0]), _arrays(cube_single[1])
    episodes = [train['actions'][:LENGTH], train['actions'][LENGTH:], val['actions']]
    assert not any(np.array_equal(a, b) for a, b in itertools.combinations(episodes, 2))


def test_a_redrawn_scene_episode_gets_a_new_seed(monkeypatch):
    """An unhealthy episode is drawn again with the next attempt's seed, not replayed as it was."""
    seeds = []
    monkeypatch.setattr(generate, '_run_episode', lambda family, length, seed: seeds.append(seed) or {})
    monkeypatch.setattr(generate, '_healthy', lambda family, episode: len(seeds) == 3)  # the third is kept
    generate._collect(resolve_task('scene').family, LENGTH, 5, 'train', 7)
    assert seeds == [generate._episode_seed(5, 'train', 7, attempt) for attempt in range(3)]
    assert len(set(seeds)) == 3


def test_task_data_gets_ogbench_rewards_and_masks(cube_single):
    task = resolve_task('cube-single', 1)
    env = make_env(task)
    try:
        train, val = load_task_data(task, env, dataset_path=cube_single[0])
    finally:
        env.close()
    assert len(train['rewards']) == 2 * (LENGTH - 1) and len(val['rewards']) == LENGTH - 1
    assert all(v.dtype == np.float32 for v in train.values())
    # cube-single: reward is 0 on success and -1 otherwise; the episode continues past success (mask 0).
    assert set(np.unique(train['rewards'])) <= {-1.0, 0.0}
    np.testing.assert_array_equal(train['masks'], -train['rewards'])
    assert np.abs(train['actions']).max() <= ACTION_CLIP


def test_rewards_and_masks_follow_the_cube_and_the_tasks_goal(cube_single, tmp_path):
    """Cube positions written into the file's qpos reach the rewards through OGBench's relabelling: 0
    (and mask 0) within 4 cm of the task's goal, -1 elsewhere and for another task's goal."""
    raw = _arrays(cube_single[0])
    goal = np.array([0.425, -0.1, 0.02])  # OGBench's cube-single task1 goal (task2's: 0.50, 0.0, 0.02)
    at_goal = {10: 0.0, 20: 0.03, LENGTH + 5: 0.0}  # file row → offset along x (episode 2 starts at LENGTH)
    for row, offset in [*at_goal.items(), (30, 0.05), (LENGTH - 1, 0.0)]:  # 5 cm: out; LENGTH - 1: dropped
        raw['qpos'][row, 14:17] = goal + [offset, 0.0, 0.0]
    path = tmp_path / 'cube-single-play-v0.npz'
    np.savez(path, **raw)
    (tmp_path / 'cube-single-play-v0-val.npz').write_bytes(Path(cube_single[1]).read_bytes())

    def successes(task_number, dataset):
        task = resolve_task('cube-single', task_number)
        env = make_env(task)
        try:
            train, _ = load_task_data(task, env, dataset_path=str(dataset))
        finally:
            env.close()
        assert set(np.unique(train['rewards'])) <= {-1.0, 0.0}
        np.testing.assert_array_equal(train['masks'], -train['rewards'])
        return set(np.flatnonzero(train['rewards'] == 0).tolist())

    before = successes(1, cube_single[0])  # the oracle's own play, before the edit
    # Transition rows: each episode's last file row has none, so file row LENGTH + 5 is transition LENGTH + 4.
    assert successes(1, path) == (before - {30}) | {10, 20, LENGTH + 4}
    assert successes(2, path) == successes(2, cube_single[0]) - set(at_goal) - {30, LENGTH + 4}


class _OneStepCollectionEnv:
    """A collection env whose episodes last one step; records the stacking probability of each new target."""

    def __init__(self):
        self.unwrapped, self.p_stacks = self, []

    def reset(self, seed=None):
        return np.zeros(1), {'privileged/target_task': 'cube'}

    def step(self, action):
        return np.zeros(1), 0.0, False, True, {'prev_qpos': np.zeros(1), 'prev_qvel': np.zeros(1)}

    def set_new_target(self, p_stack):
        self.p_stacks.append(p_stack)
        return np.zeros(1), {'privileged/target_task': 'cube'}


def test_the_stacking_probability_of_an_episode_is_the_official_one(monkeypatch):
    """OGBench's play collection: 0 for cube-single, uniform on [0, 0.25] for cube-double (the first draw
    of the episode's seeded global generator), 0.5 otherwise."""
    agent = types.SimpleNamespace(done=True, reset=lambda ob, info: None, select_action=lambda ob, info: np.zeros(5))
    for name, seed, expected in [
        ('cube-single', 3, 0.0),
        ('cube-double', 3, 0.25 * np.random.RandomState(3).random_sample()),
        ('cube-double', 4, 0.25 * np.random.RandomState(4).random_sample()),
        ('scene', 3, 0.5),
    ]:
        env = _OneStepCollectionEnv()
        monkeypatch.setattr(generate, '_collector', lambda family, length, env=env: (env, {'cube': agent}))
        generate._run_episode(resolve_task(name).family, LENGTH, seed)
        assert env.p_stacks == [pytest.approx(expected)]


def test_the_oracles_actions_are_clipped_to_the_action_box_before_the_step(monkeypatch):
    """As OGBench's collection does: the noisy oracle's action is clipped to [-1, 1], then stepped and stored."""
    env = _OneStepCollectionEnv()
    stepped = []
    step = env.step
    env.step = lambda action: stepped.append(action) or step(action)
    agent = types.SimpleNamespace(
        done=False, reset=lambda ob, info: None, select_action=lambda ob, info: [2.0, -3.0, 0.5, -1.0, 1.0]
    )
    monkeypatch.setattr(generate, '_collector', lambda family, length: (env, {'cube': agent}))
    episode = generate._run_episode(resolve_task('cube-single').family, LENGTH, 0)
    np.testing.assert_array_equal(episode['actions'], [[1.0, -1.0, 0.5, -1.0, 1.0]])
    np.testing.assert_array_equal(stepped, [[1.0, -1.0, 0.5, -1.0, 1.0]])


def test_scene_episodes_where_the_block_leaves_sight_are_redrawn():
    """OGBench's scene generator keeps an episode only if the block (qpos 14:17) never goes past the back
    wall (y >= 0.29) and is below y = -0.3 only inside the drawer (0.06 <= z <= 0.08)."""
    scene, cube = resolve_task('scene').family, resolve_task('cube-single').family

    def episode(*points):
        qpos = np.zeros((len(points) + 1, 30))
        qpos[:, 14:17] = [0.4, 0.0, 0.02]
        for i, (y, z) in enumerate(points, start=1):
            qpos[i, 15:17] = y, z
        return dict(qpos=qpos)

    assert generate._healthy(scene, episode((0.28, 0.02), (-0.35, 0.07), (-0.3, 0.06)))
    assert not generate._healthy(scene, episode((0.29, 0.02)))  # behind the wall
    assert not generate._healthy(scene, episode((-0.35, 0.02)))  # out front, not in the drawer
    assert not generate._healthy(scene, episode((-0.31, 0.081)))
    assert generate._healthy(cube, episode((0.29, 0.02)))  # the check is scene's only


def test_generation_is_deterministic_whatever_the_workers(cube_single, tmp_path):
    # Two workers and one more episode: the first two train episodes and the val episode are the same.
    train_path, val_path = generate.generate_dataset(
        'cube-single', str(tmp_path), episodes=3, seed=0, workers=2, episode_length=LENGTH, progress=False
    )
    first, more = _arrays(cube_single[0]), _arrays(train_path)
    for k in first:
        np.testing.assert_array_equal(first[k], more[k][: 2 * LENGTH])
    for k, v in _arrays(cube_single[1]).items():
        np.testing.assert_array_equal(v, _arrays(val_path)[k])
    other_seed, _ = generate.generate_dataset(
        'cube-single', str(tmp_path / 's1'), episodes=1, seed=1, workers=1, episode_length=LENGTH, progress=False
    )
    assert not np.array_equal(_arrays(other_seed)['actions'], first['actions'][:LENGTH])


def test_interrupted_generation_leaves_no_complete_file_and_resumes(cube_single, tmp_path, monkeypatch):
    collect = generate._collect
    monkeypatch.setattr(generate, '_collect', _stopped_at_the_second_train_episode(collect))
    with pytest.raises(KeyboardInterrupt):
        generate.generate_dataset(
            'cube-single', str(tmp_path), episodes=2, seed=0, workers=1, episode_length=LENGTH, progress=False
        )
    train_path, val_path = generate.output_paths(generate.generatable_family('cube-single'), tmp_path)
    assert not train_path.exists() and not val_path.exists()
    assert len(list(tmp_path.glob('.*.parts/*/train-*.npz'))) == 1  # the finished episode is kept

    calls = []
    monkeypatch.setattr(generate, '_collect', lambda *a: calls.append(a) or collect(*a))
    paths = generate.generate_dataset(
        'cube-single', str(tmp_path), episodes=2, seed=0, workers=1, episode_length=LENGTH, progress=False
    )
    assert [(c[3], c[4]) for c in calls] == [('train', 1), ('val', 0)]  # only what was missing is collected
    for new, old in zip(paths, cube_single, strict=True):
        for k, v in _arrays(old).items():
            np.testing.assert_array_equal(v, _arrays(new)[k])
    # Parts are cleaned up once the files are in place; the (empty) lock file of the writer stays.
    assert [p.name for p in tmp_path.glob('.*')] == [f'.{train_path.name}.lock']


def _generation_in_a_thread(tmp_path, error_type):
    """Generates 2 episodes with 2 workers in a thread given a minute (a hung generation would never end): whether
    it ended, and the messages of the `error_type` errors it raised."""
    errors = []

    def generate_it():
        try:
            generate.generate_dataset(
                'cube-single', str(tmp_path), episodes=2, seed=0, workers=2, episode_length=LENGTH, progress=False
            )
        except error_type as e:
            errors.append(str(e))

    thread = threading.Thread(target=generate_it, daemon=True)
    thread.start()
    thread.join(timeout=60)
    return not thread.is_alive(), errors


def _killed(job):
    """A generation job whose worker process is killed (as the out-of-memory killer would)."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_generation_worker_killed_midway_is_an_error_not_a_wait_forever(tmp_path, monkeypatch):
    """A killed worker takes its episode with it, which multiprocessing's pool waited for forever, without a word."""
    monkeypatch.setattr(generate, '_work', _killed)  # pickled by name: the workers import it from this module
    ended, errors = _generation_in_a_thread(tmp_path, EnvWorkerError)
    assert ended, 'the generation still waits for the episodes of its killed workers'
    assert errors == ['a dataset generation worker process exited (killed, or out of memory?)']


def _idle_sibling_killed(job):
    """Train episode 0's worker waits until the other worker has done the other episodes and waits for work
    (holding the task queue's lock, in multiprocessing's pool), then kills it, as the out-of-memory killer would."""
    folder = Path(os.environ['FAV_TEST_WORKER_PIDS'])
    (folder / str(os.getpid())).touch()
    if job[3:5] != ('train', 0):
        return 0
    for _ in range(300):
        siblings = [int(p.name) for p in folder.iterdir() if int(p.name) != os.getpid()]
        if siblings:
            break
        time.sleep(0.1)
    time.sleep(2)  # the sibling ends its episodes and waits for more
    for pid in siblings:
        os.kill(pid, signal.SIGKILL)
    time.sleep(60)
    return 0


def test_a_generation_worker_killed_while_it_waits_for_work_is_an_error_not_a_hang(tmp_path, monkeypatch):
    """multiprocessing's pool hung at its exit when a worker died holding its task queue's lock."""
    monkeypatch.setattr(generate, '_work', _idle_sibling_killed)  # pickled by name, as _killed
    (tmp_path / 'pids').mkdir()
    monkeypatch.setenv('FAV_TEST_WORKER_PIDS', str(tmp_path / 'pids'))  # the spawned workers inherit it
    ended, errors = _generation_in_a_thread(tmp_path / 'out', EnvWorkerError)
    assert ended, 'the generation hangs after its idle worker was killed'
    assert len(list((tmp_path / 'pids').iterdir())) == 2  # both workers took episodes: one was idle when killed
    assert errors == ['a dataset generation worker process exited (killed, or out of memory?)']


def _record_pid_and_wait(job):
    (Path(os.environ['FAV_TEST_WORKER_PIDS']) / str(os.getpid())).touch()
    time.sleep(120)


def _running(pid):
    """Whether `pid` is a live process (an orphan's zombie, left unreaped by a container's init, is not)."""
    try:
        return 'State:\tZ' not in Path(f'/proc/{pid}/status').read_text()
    except FileNotFoundError:
        return False


def test_generation_workers_end_when_their_parent_is_killed(tmp_path):
    """A generation killed with SIGKILL (or a SIGTERM the command line does not handle) left its workers waiting
    for work forever."""
    pids = tmp_path / 'pids'
    pids.mkdir()
    script = (
        'import sys; from datasets import generate; import tests.test_datasets as t; '
        'generate._work = t._record_pid_and_wait; '
        f'generate.generate_dataset("cube-single", sys.argv[1], 2, workers=2, episode_length={LENGTH}, progress=False)'
    )
    env = dict(os.environ, FAV_TEST_WORKER_PIDS=str(pids))
    parent = subprocess.Popen([sys.executable, '-c', script, str(tmp_path / 'out')], cwd=REPO, env=env)
    try:
        for _ in range(600):
            if len(list(pids.iterdir())) == 2:
                break
            time.sleep(0.1)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2, 'the workers did not start'
    finally:
        parent.kill()
        parent.wait()
    for _ in range(100):
        if not any(_running(pid) for pid in workers):
            break
        time.sleep(0.1)
    still = [pid for pid in workers if _running(pid)]
    for pid in still:
        os.kill(pid, signal.SIGKILL)
    assert still == [], 'workers outlived their parent'


def _stopped_or_failing(job):
    """Train episode 0's worker (the first job goes first) is stopped (SIGSTOP); the other episodes fail, after
    a second: by then that worker is stopped."""
    if job[3:5] == ('train', 0):
        os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(1)
    raise RuntimeError('an episode failed')


def test_a_generation_that_fails_ends_even_with_a_stopped_worker(tmp_path, monkeypatch):
    """The pool's exit SIGTERMs its workers and joins them, which a stopped worker never lets end: a Ctrl-C, a
    SIGTERM or an error hung the generation for good."""
    monkeypatch.setattr(generate, '_work', _stopped_or_failing)  # pickled by name, as _killed
    ended, errors = _generation_in_a_thread(tmp_path, RuntimeError)
    assert ended, 'the generation waits for its stopped worker to end'
    assert errors == ['an episode failed']


def test_generated_datasets_of_other_sizes_seeds_or_lengths_live_apart():
    assert generate.generated_dir('/d', 1000, 0) == Path('/d/generated/ep1000-seed0')  # the official length
    assert generate.generated_dir('/d', 3, 1, LENGTH) == Path(f'/d/generated/ep3-seed1-len{LENGTH}')


def _fake_collect(family, episode_length, seed, split, index):
    """An episode in the file layout without MuJoCo, its observations filled with its index."""
    return dict(
        observations=np.full((episode_length, 28), index, np.float32),
        actions=np.zeros((episode_length, 5), np.float32),
        terminals=np.arange(episode_length) == episode_length - 1,
        qpos=np.zeros((episode_length, 19), np.float32),
        qvel=np.zeros((episode_length, 17), np.float32),
    )


def _stopped_at_the_second_train_episode(collect):
    """`collect`, interrupted (as by Ctrl-C) when it is asked for train episode 1."""

    def collect_or_stop(family, episode_length, seed, split, index):
        if split == 'train' and index == 1:
            raise KeyboardInterrupt
        return collect(family, episode_length, seed, split, index)

    return collect_or_stop


def test_a_request_into_a_used_folder_gets_the_episodes_it_asks_for(tmp_path, monkeypatch):
    """Parts left by an interrupted run are reused only for the same episode length, and a finished
    dataset in the folder is replaced by one of the size asked for."""

    def generate_it(episodes, episode_length):
        train_path, _ = generate.generate_dataset(
            'cube-single', str(tmp_path), episodes, seed=0, workers=1, episode_length=episode_length, progress=False
        )
        return np.flatnonzero(_arrays(train_path)['terminals']).tolist()

    monkeypatch.setattr(generate, '_collect', _stopped_at_the_second_train_episode(_fake_collect))
    with pytest.raises(KeyboardInterrupt):
        generate_it(2, 3)  # leaves train episode 0, 3 rows long
    monkeypatch.setattr(generate, '_collect', _fake_collect)
    assert generate_it(2, 4) == [3, 7]  # two 4-row episodes, none of the 3-row part
    assert generate_it(1, 4) == [3]  # the 2-episode files in place are not taken for a 1-episode request


def test_finishing_one_dataset_keeps_the_parts_of_another_interrupted_one(tmp_path, monkeypatch):
    """Parts of a run with another seed, interrupted in the same folder, stay for its rerun to resume."""

    monkeypatch.setattr(generate, '_collect', _stopped_at_the_second_train_episode(_fake_collect))
    with pytest.raises(KeyboardInterrupt):
        generate.generate_dataset('cube-single', str(tmp_path), 2, seed=1, workers=1, episode_length=3, progress=False)
    monkeypatch.setattr(generate, '_collect', _fake_collect)
    generate.generate_dataset('cube-single', str(tmp_path), 2, seed=0, workers=1, episode_length=3, progress=False)
    parts = [str(p.relative_to(tmp_path)) for p in tmp_path.glob('.*.parts/*/*.npz')]
    assert parts == ['.cube-single-play-v0.parts/seed1-len3/train-000000.npz']


def test_a_request_is_checked_at_each_bound():
    for kwargs, words in [
        (dict(episodes=0), '--episodes'),
        (dict(episodes=1, episode_length=1), '--episode-length'),
        (dict(episodes=1, seed=-1), '--seed'),
        (dict(episodes=1, workers=0), '--workers'),
        # Rows no replay ring holds: the list of 3e9 episodes filled the memory before any was generated.
        (dict(episodes=3_000_000_000), f'3000000000 episodes of 1001 steps .* fewer than {2**31}'),
        (dict(episodes=2, episode_length=2**30), f'2 episodes of {2**30} steps are {2**31} rows'),
    ]:
        with pytest.raises(generate.GenerationError, match=words):
            generate.check_request('cube-single', **kwargs)
    assert generate.check_request('cube-single', 1, seed=0, workers=1, episode_length=2).short_name == 'cube-single'
    assert generate.check_request('cube-single', 1, episode_length=2**31 - 1).short_name == 'cube-single'


def test_the_validation_file_holds_a_tenth_of_the_episodes_at_least_one(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, '_collect', _fake_collect)
    for episodes, val_episodes in ((20, 2), (5, 1), (15, 1)):  # a tenth rounded down: 15 gives 1, not 2
        _, val_path = generate.generate_dataset(
            'cube-single', str(tmp_path / str(episodes)), episodes, seed=0, workers=1, episode_length=4, progress=False
        )
        assert np.flatnonzero(_arrays(val_path)['terminals']).tolist() == [4 * k + 3 for k in range(val_episodes)]


def test_a_kill_while_the_val_file_is_written_leaves_no_train_file(tmp_path, monkeypatch):
    """Over a finished pair, the old train file goes before the new val file is written and the new
    train file comes last: a kill in between leaves no train file, so the pair is never read as complete."""
    monkeypatch.setattr(generate, '_collect', _fake_collect)
    train_path, val_path = generate.generate_dataset(
        'cube-single', str(tmp_path), 1, seed=0, workers=1, episode_length=4, progress=False
    )
    save = generate._atomic_savez

    def killed_at_the_val_file(path, arrays):
        if path == Path(val_path):
            raise KeyboardInterrupt
        save(path, arrays)

    monkeypatch.setattr(generate, '_atomic_savez', killed_at_the_val_file)
    with pytest.raises(KeyboardInterrupt):
        generate.generate_dataset('cube-single', str(tmp_path), 2, seed=0, workers=1, episode_length=4, progress=False)
    assert not Path(train_path).exists()


def test_a_write_that_fails_leaves_the_previous_file_and_nothing_else(tmp_path):
    path = tmp_path / 'data.npz'
    path.write_bytes(b'complete')
    with pytest.raises(OSError, match='disk full'):
        with atomic_write(path) as f:
            f.write(b'half')
            raise OSError('disk full')
    assert path.read_bytes() == b'complete' and [p.name for p in tmp_path.iterdir()] == ['data.npz']


def _while_another_writes(path, call, files):
    """Runs `call` in a thread while this test holds `path`'s writer lock, as another process in the
    middle of writing it would; puts `files` (target: source) in place, releases, returns its result."""
    result = {}
    with one_writer(path, 'is writing'):
        thread = threading.Thread(target=lambda: result.update(value=call()))
        thread.start()
        thread.join(timeout=2)
        assert thread.is_alive() and not Path(path).exists()  # it waits for the writer
        for target, source in files.items():
            Path(target).write_bytes(Path(source).read_bytes())
    thread.join(timeout=60)
    return result['value']


def test_concurrent_generations_of_one_dataset_wait_and_share_it(cube_single, tmp_path, monkeypatch):
    """The jobs of a sweep may all find the same dataset missing: one generates, the others wait and use
    its files (a second generation would delete the first's parts under it)."""
    calls = []
    monkeypatch.setattr(generate, '_collect', lambda *a: calls.append(a))
    paths = generate.output_paths(generate.generatable_family('cube-single'), tmp_path)
    generate_it = lambda: generate.generate_dataset(  # noqa: E731
        'cube-single', str(tmp_path), episodes=2, seed=0, workers=1, episode_length=LENGTH, progress=False
    )
    files = dict(zip(paths, cube_single, strict=True))
    assert _while_another_writes(paths[0], generate_it, files) == tuple(map(str, paths))
    assert calls == []  # nothing collected again


def test_concurrent_downloads_of_one_file_wait_and_share_it(cube_single, tmp_path, monkeypatch):
    monkeypatch.setattr(ogbench_data, 'OFFICIAL_EPISODES', 2)  # the size of the files standing in for the official
    downloads = []
    monkeypatch.setattr(ogbench_data, '_download', lambda task, dataset_dir: downloads.append(task))
    monkeypatch.setattr(generate, 'generate_dataset', lambda *a, **k: pytest.fail('regenerated, not waited'))
    task = resolve_task('cube-single', 1)
    official = tmp_path / f'{task.dataset_name}.npz'
    files = {official: cube_single[0], str(official).replace('.npz', '-val.npz'): cube_single[1]}
    find = lambda: find_task_file(task, dataset_dir=str(tmp_path))  # noqa: E731
    assert _while_another_writes(official, find, files) == (str(official), 'official')
    assert downloads == []  # the waiting job did not download it again


def test_a_download_waited_on_that_failed_is_tried_again_by_the_job_that_waited(cube_single, tmp_path, monkeypatch):
    monkeypatch.setattr(ogbench_data, 'OFFICIAL_EPISODES', 2)  # the size of the files standing in for the official
    task = resolve_task('cube-single', 1)
    official = tmp_path / f'{task.dataset_name}.npz'
    files = {official: cube_single[0], str(official).replace('.npz', '-val.npz'): cube_single[1]}
    downloads = []

    def download(task, dataset_dir):
        downloads.append(task)
        for target, source in files.items():
            Path(target).write_bytes(Path(source).read_bytes())

    monkeypatch.setattr(ogbench_data, '_download', download)
    monkeypatch.setattr(generate, 'generate_dataset', lambda *a, **k: pytest.fail('regenerated, not downloaded'))
    find = lambda: find_task_file(task, dataset_dir=str(tmp_path))  # noqa: E731
    # The other job's download ends leaving no files (no network there, say).
    assert _while_another_writes(official, find, {}) == (str(official), 'official')
    assert downloads == [task]


def _write(path, arrays):
    np.savez(path, **arrays)


def test_bad_files_fail_with_a_message_naming_the_file(cube_single, tmp_path):
    task = resolve_task('cube-single', 1)
    env = make_env(task)
    good = _arrays(cube_single[0])
    try:
        truncated = tmp_path / 'truncated.npz'
        truncated.write_bytes(Path(cube_single[0]).read_bytes()[:5000])
        _write(tmp_path / 'truncated-val.npz', good)
        with pytest.raises(DatasetError, match=f'{truncated}.*(truncated|corrupt)'):
            load_task_data(task, env, dataset_path=str(truncated))

        garbage = tmp_path / 'garbage.npz'
        garbage.write_bytes(b'not a dataset ' * 10)
        _write(tmp_path / 'garbage-val.npz', good)
        with pytest.raises(DatasetError) as refused:
            load_task_data(task, env, dataset_path=str(garbage))
        assert str(refused.value) == (
            f'dataset file {garbage} is not a readable .npz file (truncated or corrupt?): not a zip archive'
        )  # not numpy's advice to load it with allow_pickle

        no_qpos = tmp_path / 'no_qpos.npz'
        _write(no_qpos, {k: v for k, v in good.items() if k != 'qpos'})
        _write(tmp_path / 'no_qpos-val.npz', good)
        with pytest.raises(DatasetError, match=f'{no_qpos}.*qpos'):
            load_task_data(task, env, dataset_path=str(no_qpos))

        cut_episode = tmp_path / 'cut.npz'
        _write(cut_episode, {k: v[:-10] for k, v in good.items()})
        _write(tmp_path / 'cut-val.npz', good)
        with pytest.raises(DatasetError, match=f'{cut_episode}.*terminal'):
            load_task_data(task, env, dataset_path=str(cut_episode))

        ragged = tmp_path / 'ragged.npz'
        _write(ragged, {**good, 'actions': good['actions'][:-1]})
        _write(tmp_path / 'ragged-val.npz', good)
        with pytest.raises(DatasetError, match=f'{ragged}.*actions'):
            load_task_data(task, env, dataset_path=str(ragged))

        lonely = tmp_path / 'lonely.npz'
        _write(lonely, good)
        with pytest.raises(DatasetError, match='lonely-val.npz does not exist'):
            load_task_data(task, env, dataset_path=str(lonely))

        # A folder given as --dataset was 'dataset file ... must end in .npz', or 'does not exist' when it did.
        for folder in (tmp_path / 'data', tmp_path / 'data.npz'):
            folder.mkdir()
            with pytest.raises(DatasetError) as refused:
                load_task_data(task, env, dataset_path=str(folder))
            assert str(refused.value).startswith(f'--dataset {folder} is a folder: pass its train .npz file')
        (tmp_path / 'lonely-val.npz').mkdir()
        with pytest.raises(DatasetError, match='lonely-val.npz is a folder$'):
            load_task_data(task, env, dataset_path=str(lonely))
    finally:
        env.close()


def _cube_single_env():
    """Just cube-single's spaces (28-dim observations, 5-dim actions) and its model's 21 joint positions and 20
    velocities: the checks compare the file's to them."""
    box = lambda n: gymnasium.spaces.Box(-1, 1, (n,))  # noqa: E731
    model = types.SimpleNamespace(nq=21, nv=20)
    return types.SimpleNamespace(
        observation_space=box(28), action_space=box(5), unwrapped=types.SimpleNamespace(model=model)
    )


def _small_file(path, **changes):
    """A 2-episode file of 6 rows in the official cube-single layout (and its -val file), with `changes`."""
    arrays = dict(
        observations=np.zeros((6, 28), np.float32),
        actions=np.zeros((6, 5), np.float32),
        terminals=np.array([0, 0, 1, 0, 0, 1], bool),
        qpos=np.zeros((6, 21), np.float32),
        qvel=np.zeros((6, 20), np.float32),
    )
    arrays.update(changes)
    for p in (path, ogbench_data.val_path(str(path))):
        _write(p, arrays)
    return str(path)


def test_files_that_do_not_fit_are_refused_before_ogbench_reads_them(tmp_path):
    task, env = resolve_task('cube-single', 1), _cube_single_env()

    def refused(path, words, task=task):
        with pytest.raises(DatasetError, match=words):
            load_task_data(task, env, dataset_path=path)

    path = _small_file(tmp_path / 'val_cut.npz')
    Path(ogbench_data.val_path(path)).write_bytes(Path(path).read_bytes()[:300])  # the train file is whole
    refused(path, f'{ogbench_data.val_path(path)}.*(truncated|corrupt)')
    nan = np.zeros((6, 28), np.float32)
    nan[2, 0] = np.nan
    refused(_small_file(tmp_path / 'nan.npz', observations=nan), 'nan.npz has non-finite observations')
    inf = np.zeros((6, 5), np.float32)
    inf[4, 1] = -np.inf  # the loader's clip would turn it into -ACTION_CLIP without a word
    refused(_small_file(tmp_path / 'inf.npz', actions=inf), 'inf.npz has non-finite actions')
    wide = _small_file(tmp_path / 'wide.npz', observations=np.zeros((6, 29), np.float32))
    refused(wide, 'observation dim 29 but env cube-single-singletask-task1-v0 expects 28')
    narrow = _small_file(tmp_path / 'narrow.npz', actions=np.zeros((6, 4), np.float32))
    refused(narrow, 'action dim 4 but env cube-single-singletask-task1-v0 expects 5')
    flat = _small_file(tmp_path / 'flat.npz', actions=np.zeros(6, np.float32))
    refused(flat, r'flat.npz: actions has shape \(6,\), expected \(rows, dim\)')
    column = _small_file(tmp_path / 'column.npz', terminals=np.array([[0], [0], [1], [0], [0], [1]], bool))
    refused(column, r'column.npz: terminals has shape \(6, 1\), expected rows')
    # Wider qpos passed OGBench's relabelling, which reads fixed columns: rewards from some other model's joints.
    wide_qpos = _small_file(tmp_path / 'wide_qpos.npz', qpos=np.zeros((6, 28), np.float32))
    refused(wide_qpos, 'wide_qpos.npz has qpos width 28 but env cube-single-singletask-task1-v0 has 21 joint positions')
    narrow_qvel = _small_file(tmp_path / 'narrow_qvel.npz', qvel=np.zeros((6, 17), np.float32))
    refused(narrow_qvel, 'narrow_qvel.npz has qvel width 17 but env .* has 20 joint velocities')
    # Puzzle (and scene) files hold the button states OGBench relabels their rewards from.
    refused(_small_file(tmp_path / 'puzzle.npz'), 'puzzle.npz lacks key.*button_states', resolve_task('puzzle-3x3'))
    refused(_small_file(tmp_path / 'scene.npz'), 'scene.npz lacks key.*button_states', resolve_task('scene'))
    # No rows at all (every array empty): no last row to be a terminal.
    empty = {k: v[:0] for k, v in _arrays(path).items()}
    refused(_small_file(tmp_path / 'empty.npz', **empty), 'empty.npz is empty or does not end with a terminal row')


def test_a_single_npy_array_named_npz_is_refused_in_one_line(tmp_path):
    """np.load gives a bare ndarray for a .npy file whatever its name: no context manager (was a TypeError)."""
    task, env = resolve_task('cube-single', 1), _cube_single_env()
    path = _small_file(tmp_path / 'array.npz')
    with open(path, 'wb') as f:  # a file object: numpy writes .npy content under the .npz name
        np.save(f, np.zeros((6, 28), np.float32))
    with pytest.raises(DatasetError, match=r'array\.npz is a single \.npy array, not an OGBench \.npz dataset'):
        load_task_data(task, env, dataset_path=path)


def test_arrays_of_other_than_numbers_are_refused_naming_the_array(tmp_path):
    """Strings were a TypeError traceback from the finite check, objects 'not a zip archive', and complex numbers
    lost their imaginary part in OGBench's float32 cast without a word."""
    task, env = resolve_task('cube-single', 1), _cube_single_env()
    numbers = np.zeros((6, 28), np.float32)
    for name, observations, words in (
        ('text', numbers.astype('U8'), r'observations has dtype <U8, expected numbers'),
        ('complex', numbers.astype(np.complex64), 'observations has dtype complex64, expected numbers'),
        ('objects', numbers.astype(object), 'observations holds Python objects, expected numbers'),
    ):
        path = tmp_path / f'{name}.npz'
        _small_file(path)
        np.savez(path, **{**_arrays(ogbench_data.val_path(str(path))), 'observations': observations})
        with pytest.raises(DatasetError, match=f'dataset file {path}: {words}'):
            load_task_data(task, env, dataset_path=str(path))


def test_a_dataset_file_not_named_npz_is_refused_in_one_line(tmp_path):
    """OGBench finds the -val file by replacing '.npz' in the path: without one, the train file would be its own."""
    task, env = resolve_task('cube-single', 1), _cube_single_env()
    path = tmp_path / 'data.bin'
    path.write_bytes(Path(_small_file(tmp_path / 'data.npz')).read_bytes())
    with pytest.raises(DatasetError, match=rf'^dataset file {path} must end in \.npz'):
        load_task_data(task, env, dataset_path=str(path))


def test_a_file_of_one_row_episodes_is_refused_as_holding_no_transitions(tmp_path):
    """OGBench drops each episode's last row: none was left to sample (a ZeroDivisionError in the first update)."""
    task, env = resolve_task('cube-single', 1), _cube_single_env()
    path = _small_file(tmp_path / 'single_rows.npz', terminals=np.ones(6, bool))
    with pytest.raises(DatasetError, match='single_rows.npz holds no transitions: each of its episodes is a single'):
        load_task_data(task, env, dataset_path=path)


def test_a_file_ogbench_cannot_relabel_is_refused_in_one_line(tmp_path):
    """Button states of another puzzle's size (4 for 3×3's 9): numpy's broadcast error from OGBench's relabelling
    was a traceback."""
    task = resolve_task('puzzle-3x3', 1)
    env = make_env(task)
    try:
        sizes = dict(observations=55, actions=5, qpos=23, qvel=23, button_states=4)
        path = _small_file(tmp_path / 'narrow.npz', **{k: np.zeros((6, n), np.float32) for k, n in sizes.items()})
        with pytest.raises(DatasetError) as refused:
            load_task_data(task, env, dataset_path=path)
    finally:
        env.close()
    message = str(refused.value)
    assert message.startswith(f'dataset {path} (or its -val file) does not fit {task.name}: OGBench could not')
    assert message.endswith('is it puzzle-3x3-play data?') and '\n' not in message


def test_an_official_file_without_its_val_file_is_downloaded_again(tmp_path, monkeypatch):
    task = resolve_task('cube-single', 1)
    official = tmp_path / f'{task.dataset_name}.npz'
    official.write_bytes(b'train')  # a download cut between its two files
    downloads = []

    def download(task, dataset_dir):
        downloads.append(task.dataset_name)
        Path(ogbench_data.val_path(str(official))).write_bytes(b'val')

    monkeypatch.setattr(ogbench_data, '_download', download)
    assert find_task_file(task, dataset_dir=str(tmp_path)) == (str(official), 'official')
    assert downloads == ['cube-single-play-v0']


def test_a_dataset_folder_named_npz_is_refused_in_one_line(tmp_path):
    """OGBench reads <path>.replace('.npz', '-val.npz'): in a folder 'd.npz' it would look for 'd-val.npz/'."""
    folder = tmp_path / 'd.npz'
    folder.mkdir()
    task = resolve_task('cube-single', 1)
    for kwargs in (dict(dataset_path=str(folder / 'x.npz')), dict(dataset_dir=str(folder), dataset_episodes=2)):
        with pytest.raises(DatasetError, match=r"d\.npz has '\.npz' in its name"):
            find_task_file(task, **kwargs)
    assert not list(folder.iterdir())  # nothing written


def test_missing_official_file_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(ogbench_data, '_download', lambda task, dataset_dir: 'no route to host')
    # Navigate data was collected by expert policies: nothing to fall back on, say so.
    task = resolve_task('antmaze-large-navigate', 1)
    expected = (
        r"navigate-v0.npz.*no route to host.*cannot be regenerated.*download_datasets\(\['antmaze-large-navigate-v0'\]"
    )
    with pytest.raises(DatasetError, match=expected):
        load_task_data(task, None, dataset_dir=str(tmp_path))
    # A download that raised nothing but left no files (OGBench's own failure, say) is not '(None)'.
    monkeypatch.setattr(ogbench_data, '_download', lambda task, dataset_dir: None)
    with pytest.raises(DatasetError, match=r'could not be downloaded \(the download left no complete train/val pair\)'):
        load_task_data(task, None, dataset_dir=str(tmp_path))
    # Manipulation data is regenerated with the oracles (here shrunk to one short episode).
    monkeypatch.setattr(ogbench_data, 'OFFICIAL_EPISODES', 1)
    monkeypatch.setattr(ogbench_data, 'EPISODE_LENGTH', LENGTH)
    task = resolve_task('cube-single', 1)
    env = make_env(task)
    try:
        train, _ = load_task_data(task, env, dataset_dir=str(tmp_path), workers=1)
    finally:
        env.close()
    assert len(train['observations']) == LENGTH - 1
    generated = generate.generated_dir(tmp_path, 1, 0, LENGTH) / f'{task.dataset_name}.npz'
    # Its origin says so (config.json records it; the tables mark such runs): not the official file.
    assert find_task_file(task, dataset_dir=str(tmp_path)) == (str(generated), 'regenerated')
    for suffix in ('.npz', '-val.npz'):  # once the official files are in the dataset directory, they are used
        official = tmp_path / f'{task.dataset_name}{suffix}'
        official.write_bytes(Path(str(generated).replace('.npz', suffix)).read_bytes())
    assert find_task_file(task, dataset_dir=str(tmp_path)) == (str(tmp_path / f'{task.dataset_name}.npz'), 'official')


def test_a_generated_dataset_in_the_dataset_directory_is_not_taken_for_the_official_one(cube_single, tmp_path):
    """A generated dataset's folder given as --dataset-dir (as the hint for a folder given as --dataset reads), or a
    generated file put where the official one goes, was recorded as official data: its runs were shown in the
    tables as comparable with the paper's."""
    task = resolve_task('cube-single', 1)
    generated_folder = Path(cube_single[0]).parent
    with pytest.raises(DatasetError) as error:
        find_task_file(task, dataset_dir=str(generated_folder))
    assert str(error.value) == (
        f'{cube_single[0]} holds 2 train episodes, the official cube-single-play-v0 file 1000: it is not the official '
        f'dataset; to train on it pass --dataset {cube_single[0]} (its runs are then marked as trained on given data), '
        'or put the official file there'
    )
    assert find_task_file(task, cube_single[0]) == (cube_single[0], 'given')
    # Of the official size (here shrunk to 2 episodes), a generated dataset's folder is still refused: the full-size
    # dataset regenerated by the official recipe is not the official file.
    generated, root = tmp_path / 'generated' / 'ep1000-seed0', tmp_path / 'data'
    for folder in (generated, root):
        folder.mkdir(parents=True)
        for source in cube_single:
            (folder / Path(source).name).write_bytes(Path(source).read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ogbench_data, 'OFFICIAL_EPISODES', 2)
        with pytest.raises(DatasetError, match=r"v0\.npz is in a generated dataset's folder: it is not the official"):
            find_task_file(task, dataset_dir=str(generated))
        patch.chdir(generated)  # --dataset-dir . from inside it
        with pytest.raises(DatasetError, match=r"v0\.npz is in a generated dataset's folder: it is not the official"):
            find_task_file(task, dataset_dir='.')
        assert find_task_file(task, dataset_dir=str(root)) == (str(root / 'cube-single-play-v0.npz'), 'official')


@pytest.mark.parametrize(
    ('family', 'episodes', 'official'),
    [
        ('antmaze-giant-navigate', 500, 500),
        ('antmaze-large-navigate', 1000, 1000),
        ('antmaze-giant-navigate', 1000, 500),
    ],
)
def test_the_official_episode_count_is_500_for_antmaze_giant_and_1000_for_the_others(
    family, episodes, official, tmp_path
):
    """antmaze-giant's official file has 500 train episodes (of twice the length): one with 1000 is not it, and the
    official one must not be refused. Only `terminals` is read to count them."""
    task = resolve_task(family, 1)
    train = tmp_path / f'{task.dataset_name}.npz'
    for path in (train, tmp_path / f'{task.dataset_name}-val.npz'):
        np.savez(path, terminals=np.ones(episodes, bool))
    if episodes == official:
        assert find_task_file(task, dataset_dir=str(tmp_path)) == (str(train), 'official')
    else:
        with pytest.raises(
            DatasetError, match=f'holds {episodes} train episodes, the official {task.dataset_name} file {official}:'
        ):
            find_task_file(task, dataset_dir=str(tmp_path))


@pytest.mark.parametrize('progress', [True, False])
def test_generation_shows_its_progress_bar_unless_asked_not_to(progress, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(ogbench_data, 'EPISODE_LENGTH', LENGTH)
    task = resolve_task('cube-single', 1)
    path, origin = find_task_file(task, dataset_dir=str(tmp_path), dataset_episodes=1, workers=1, progress=progress)
    assert origin == 'generated' and Path(path).is_file()
    assert ('cube-single-play-v0' in capfd.readouterr().err) == progress  # the bar's label (tqdm, on stderr)


@pytest.mark.parametrize(
    'args, words',
    [
        (['--env', 'no-such-env'], 'closest valid names'),
        (['--env', 'antmaze-large-navigate'], 'cannot be generated'),
        (['--env', 'cube-single', '--episodes', '0'], '--episodes'),
        (['--env', 'cube-single', '--episodes', 'abc'], "argument --episodes: invalid int value: 'abc'"),
        (['--episodes', '3'], 'the following arguments are required: --env'),
    ],
)
def test_generate_cli_rejects_bad_requests_in_one_line(args, words, tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'datasets.generate', *args, '--out', str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_generate_cli_usage_names_the_command_that_runs_it(capsys):
    """The usage line said 'generate.py', a file that does not run from the repository root (it is a module)."""
    from datasets import generate

    with pytest.raises(SystemExit):
        generate.main(['--help'])
    assert capsys.readouterr().out.startswith('usage: python -m datasets.generate ')


@pytest.mark.parametrize('out, words', [('', '--out is empty'), ('/proc/fav_data', '--out /proc/fav_data: ')])
def test_generate_cli_out_empty_or_impossible_is_one_line(out, words):
    """'' fell back to the default folder (~/.ogbench); /proc was a FileNotFoundError traceback."""
    result = subprocess.run(
        [sys.executable, '-m', 'datasets.generate', '--env', 'cube-single', '--episodes', '2', '--out', out],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stderr.startswith(f'error: {words}'), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('under', ['', 'data'])
def test_generate_cli_out_through_a_file_is_one_line_naming_the_file(under, tmp_path):
    """It said 'File exists' for --out FILE and 'Not a directory' for --out FILE/data."""
    (tmp_path / 'notes.txt').write_text('kept')
    out = tmp_path / 'notes.txt' / under if under else tmp_path / 'notes.txt'
    result = subprocess.run(
        [sys.executable, '-m', 'datasets.generate', '--env', 'cube-single', '--episodes', '2', '--out', str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f'error: --out {out}: {tmp_path / "notes.txt"} is a file; pass a folder that can be created\n'
    )
    assert (tmp_path / 'notes.txt').read_text() == 'kept'


def test_generate_cli_on_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """A write on a full disk raises an OSError that names no file: it was a traceback."""
    import errno
    import os

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'fsync', no_space)
    argv = [
        '--env',
        'cube-single',
        '--episodes',
        '1',
        '--episode-length',
        '4',
        '--workers',
        '1',
        '--out',
        str(tmp_path),
    ]
    assert generate.main(argv) == 1
    part = tmp_path / '.cube-single-play-v0.parts' / 'seed0-len4' / 'train-000000.npz'
    last_line = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert last_line == (
        f'error: {part}: No space left on device; free some space there, then rerun the same command to go on from '
        'its finished episodes'
    )


def test_generate_cli_ctrl_c_is_one_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C during a generation printed a KeyboardInterrupt traceback (one per process with --workers 1)."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, 'generate_dataset', interrupted)
    try:
        code = generate.main(['--env', 'cube-single', '--episodes', '2', '--out', str(tmp_path)])
    except KeyboardInterrupt:
        pytest.fail('Ctrl-C left main as a KeyboardInterrupt traceback')
    assert code == 130
    err = capsys.readouterr().err
    assert err.startswith('interrupted: rerun the same command') and len(err.strip().splitlines()) == 1


def test_a_folder_where_a_dataset_file_goes_is_refused_before_any_episode_is_collected(tmp_path, monkeypatch, capsys):
    """It was found after every episode was collected (half a core-hour for a full-size dataset)."""
    monkeypatch.setattr(generate, '_work', lambda job: pytest.fail('an episode was collected'))
    in_the_way = tmp_path / 'cube-single-play-v0-val.npz'
    in_the_way.mkdir()
    assert generate.main(['--env', 'cube-single', '--episodes', '2', '--out', str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f'error: {in_the_way} is a folder where the dataset file goes: move it away, or write elsewhere\n'
    )
    # The loader's generation (--dataset-episodes) likewise, in one line.
    task = resolve_task('cube-single', 1)
    in_the_way = generate.generated_dir(tmp_path, 2, 0) / f'{task.dataset_name}.npz'
    in_the_way.mkdir(parents=True)
    with pytest.raises(DatasetError, match=rf'^{in_the_way} is a folder where the dataset file goes'):
        find_task_file(task, dataset_dir=str(tmp_path), dataset_episodes=2)


def test_a_damaged_part_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """Parts are renamed into place once written, so a damaged one is a disk's fault; it was a traceback."""
    monkeypatch.setattr(generate, '_work', lambda job: pytest.fail('a finished episode was collected again'))
    task = resolve_task('cube-single', 1)
    for out in (tmp_path / 'out', generate.generated_dir(tmp_path / 'data', 1, 0)):
        parts = out / f'.{task.dataset_name}.parts' / f'seed0-len{generate.DEFAULT_EPISODE_LENGTH}'
        parts.mkdir(parents=True)
        for split in ('train', 'val'):
            (parts / f'{split}-000000.npz').write_bytes(b'PK\x03\x04 cut short')
    damaged = tmp_path / 'out' / f'.{task.dataset_name}.parts' / f'seed0-len{generate.DEFAULT_EPISODE_LENGTH}'
    assert generate.main(['--env', 'cube-single', '--episodes', '1', '--out', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith(f'error: part file {damaged / "train-000000.npz"} is damaged (') and 'Traceback' not in err
    assert last.endswith('): delete it, then rerun the same command to collect that episode again')
    assert not (tmp_path / 'out' / f'{task.dataset_name}.npz').exists()
    with pytest.raises(DatasetError, match=r'part file .*train-000000\.npz is damaged'):
        find_task_file(task, dataset_dir=str(tmp_path / 'data'), dataset_episodes=1)
