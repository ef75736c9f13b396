"""The registry against docs/algorithm.md: the suites, the per-environment settings, name resolution."""

import subprocess
import sys
from pathlib import Path

import pytest

from envs.registry import FAMILIES, SUITES, UnknownTaskError, resolve_task

REPO = Path(__file__).resolve().parents[1]

# (σ, β, FAV-Adaptive β, γ, q_agg, reward shift) as the paper sets them.
PAPER = {
    'antmaze-large-navigate': (0.5, 2, 1, 0.99, 'min', 0),
    'antmaze-giant-navigate': (0.5, 1, 1, 0.995, 'min', 0),
    'humanoidmaze-medium-navigate': (0.5, 1, 2, 0.995, 'mean', 0),
    'humanoidmaze-large-navigate': (0.5, 1, 2, 0.995, 'mean', 0),
    'antsoccer-arena-navigate': (1, 1, 2, 0.995, 'mean', 0),
    'cube-single-play': (0.05, 1, 0.5, 0.99, 'mean', 0),
    'cube-double-play': (0.1, 0.5, 0.5, 0.99, 'mean', 0),
    'scene-play': (0.1, 0.5, 0.5, 0.99, 'mean', 0),
    'puzzle-3x3-play': (0.5, 0.5, 2, 0.99, 'mean', 0),
    'puzzle-4x4-play': (1, 0.5, 0.1, 0.99, 'mean', 0),
    'antmaze-umaze-v2': (0.5, 1, 3, 0.99, 'mean', -1),
    'antmaze-umaze-diverse-v2': (1, 1, 3, 0.99, 'mean', -1),
    'antmaze-medium-play-v2': (1, 3, 2, 0.99, 'mean', -1),
    'antmaze-medium-diverse-v2': (1, 3, 3, 0.99, 'mean', -1),
    'antmaze-large-play-v2': (1, 3, 5, 0.99, 'mean', -1),
    'antmaze-large-diverse-v2': (1, 3, 5, 0.99, 'mean', -1),
}
O2O_FAMILIES = {
    'antmaze-giant-navigate',
    'humanoidmaze-large-navigate',
    'antsoccer-arena-navigate',
    'cube-double-play',
    'scene-play',
    'puzzle-4x4-play',
}
EPISODE_LENGTH = {
    'cube-single-play': 200,
    'cube-double-play': 500,
    'scene-play': 750,
    'puzzle-3x3-play': 500,
    'puzzle-4x4-play': 500,
    'antmaze-large-navigate': 1000,
    'antmaze-giant-navigate': 1000,
    'humanoidmaze-medium-navigate': 2000,
    'humanoidmaze-large-navigate': 2000,
    'antsoccer-arena-navigate': 1000,
}
# D4RL's gym registration: AntMaze umaze episodes last 700 steps, medium and large 1000 (the Minari
# backend's env is made with these limits, so they are the evaluation's too).
D4RL_EPISODE_LENGTH = {
    'antmaze-umaze-v2': 700,
    'antmaze-umaze-diverse-v2': 700,
    'antmaze-medium-play-v2': 1000,
    'antmaze-medium-diverse-v2': 1000,
    'antmaze-large-play-v2': 1000,
    'antmaze-large-diverse-v2': 1000,
}
# OGBench's default singletask task (its `<env>-singletask-v0` env, reward_task_id 0): the task a run
# without --task gets.
DEFAULT_TASK = {
    'antmaze-large-navigate': 1,
    'antmaze-giant-navigate': 1,
    'humanoidmaze-medium-navigate': 1,
    'humanoidmaze-large-navigate': 1,
    'antsoccer-arena-navigate': 4,
    'cube-single-play': 2,
    'cube-double-play': 2,
    'scene-play': 2,
    'puzzle-3x3-play': 4,
    'puzzle-4x4-play': 4,
}


def test_suites_have_the_papers_tasks():
    assert len(SUITES['offline']) == len(set(SUITES['offline'])) == 56
    assert len(SUITES['o2o']) == len(set(SUITES['o2o'])) == 30
    assert set(SUITES['o2o']) <= set(SUITES['offline'])
    assert sum(n.endswith('-v2') for n in SUITES['offline']) == 6
    assert 'cube-double-play-singletask-task2-v0' in SUITES['o2o']
    assert {n.split('-singletask')[0] for n in SUITES['o2o']} == O2O_FAMILIES


@pytest.mark.parametrize('name', sorted(PAPER))
def test_per_environment_settings(name):
    f = FAMILIES[name]
    assert (f.sigma, f.beta, f.adaptive_beta, f.discount, f.q_agg, f.reward_shift) == PAPER[name]
    assert f.episode_length == {**EPISODE_LENGTH, **D4RL_EPISODE_LENGTH}[name]


def test_the_play_families_and_only_they_can_have_their_data_generated():
    """The manipulation play datasets (cube, scene, puzzle) can be regenerated with OGBench's
    oracles; navigate datasets (expert policies) and D4RL cannot."""
    play = {'cube-single-play', 'cube-double-play', 'scene-play', 'puzzle-3x3-play', 'puzzle-4x4-play'}
    assert {name for name, f in FAMILIES.items() if f.generatable} == play


def test_episode_lengths_match_ogbench():
    import gymnasium
    import ogbench  # noqa: F401

    for name, length in EPISODE_LENGTH.items():
        task = resolve_task(name, 1)
        assert gymnasium.spec(task.env_id).max_episode_steps == length == FAMILIES[name].episode_length


def test_name_resolution():
    assert resolve_task('cube-double').name == 'cube-double-play-singletask-task2-v0'  # OGBench default task
    assert resolve_task('cube-double-play', 4).name == 'cube-double-play-singletask-task4-v0'
    assert resolve_task('puzzle-3x3').task_id == 4
    assert resolve_task('antsoccer-arena').task_id == 4
    task = resolve_task('scene-play-singletask-task3-v0')
    assert (task.task_id, task.env_id, task.dataset_name) == (3, 'scene-singletask-task3-v0', 'scene-play-v0')
    assert resolve_task('antmaze-large-play-v2').family.source == 'd4rl'
    # A D4RL task is its family's only task: --task 1 names it, by its full name as by its family's.
    assert resolve_task('antmaze-umaze-v2', 1) == resolve_task('antmaze-umaze-v2')
    with pytest.raises(UnknownTaskError, match='already names a single task; drop --task 2'):
        resolve_task('antmaze-umaze-v2', 2)
    with pytest.raises(UnknownTaskError, match='already names task 3; drop --task 2'):
        resolve_task('scene-play-singletask-task3-v0', 2)
    with pytest.raises(UnknownTaskError, match='1..5'):
        resolve_task('cube-double', 6)
    with pytest.raises(UnknownTaskError, match='cube-double'):
        resolve_task('cube-dubble')


def test_an_unknown_env_like_no_valid_name_lists_every_environment():
    with pytest.raises(UnknownTaskError) as error:
        resolve_task('zzzz')  # no name close enough to suggest: the message still names the valid ones
    listed = str(error.value).removeprefix("unknown environment 'zzzz'; closest valid names: ").split(', ')
    assert listed[:2] == ['antmaze-large', 'antmaze-giant'] and len(listed) == len(PAPER) == 16
    assert {'cube-single', 'puzzle-4x4', 'antmaze-umaze-v2', 'antmaze-large-diverse-v2'} <= set(listed)


def test_a_misspelt_short_name_is_answered_with_the_short_name_first():
    """The names a typo is matched against include the short family names (the ones --env is usually given)."""
    with pytest.raises(UnknownTaskError) as error:
        resolve_task('cube-dubble')  # one letter off 'cube-double'
    listed = str(error.value).removeprefix("unknown environment 'cube-dubble'; closest valid names: ").split(', ')
    assert listed[0] == 'cube-double' and 'cube-double-play' in listed


@pytest.mark.parametrize('name', sorted(DEFAULT_TASK))
def test_a_family_without_task_resolves_to_ogbenchs_default_task(name):
    task = resolve_task(FAMILIES[name].short_name)
    assert task.task_id == DEFAULT_TASK[name] and task.name == f'{name}-singletask-task{DEFAULT_TASK[name]}-v0'
    # The family's name + '-singletask-v0' (OGBench's suffix for an env's default task) names it too.
    assert resolve_task(f'{name}-singletask-v0') == task
    assert resolve_task(f'{name}-singletask-v0', DEFAULT_TASK[name]) == task
    other = DEFAULT_TASK[name] % 5 + 1  # it named the default task, and silently trained this one
    with pytest.raises(UnknownTaskError, match=f"is OGBench's name of task {DEFAULT_TASK[name]}; drop --task {other}"):
        resolve_task(f'{name}-singletask-v0', other)


def test_every_task_id_from_1_to_5_resolves_and_no_other():
    for k in range(1, 6):
        task = resolve_task('cube-double', k)
        assert (task.task_id, task.env_id) == (k, f'cube-double-singletask-task{k}-v0')
    for k in (0, 6):
        with pytest.raises(UnknownTaskError, match='1..5'):
            resolve_task('cube-double', k)


def _cli(*args):
    return subprocess.run(
        [sys.executable, 'launch/offline.py', *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_lists_the_suites():
    offline = _cli('--list-tasks', 'offline')
    assert offline.returncode == 0 and offline.stdout.split() == SUITES['offline']
    assert _cli('--list-tasks', 'o2o').stdout.split() == SUITES['o2o']


def test_cli_unknown_env_is_one_line_with_choices():
    result = _cli('--env', 'no-such-env')
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'no-such-env' in lines[0] and 'valid' in lines[0], result.stderr
    assert 'Traceback' not in result.stderr
