"""Benchmark tables and figures from synthetic run directories with known scores."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from launch import tables
from launch.results import ModeResults, load_runs, results_by_mode
from launch.run_logs import STOPPED_NAME

REPO = Path(__file__).resolve().parents[1]
TASK = 'cube-single-play-singletask-task{}-v0'
SCENE = 'scene-play-singletask-task2-v0'


def _run(
    root,
    mode,
    task,
    agent,
    seed,
    score=None,
    online=None,
    offline_steps=100,
    agent_config=None,
    folder=None,
    origin=None,
    options=None,
):
    """A run directory as launch/loop.py leaves it; `score=None` and `online=None`: unfinished. `origin`: the
    config's dataset_origin (None: not recorded, as in runs from before it was)."""
    run_dir = Path(root, mode, task, folder or agent, f'seed{seed}')
    run_dir.mkdir(parents=True)
    config = dict(mode=mode, task=task, agent=agent, seed=seed, offline_steps=offline_steps, **(options or {}))
    if origin is not None:
        config['dataset_origin'] = origin
    if agent_config is not None:
        config['agent_config'] = agent_config
    (run_dir / 'config.json').write_text(json.dumps(config))
    rows = [(1, 0.0), (100, 0.5), (200, 0.25 * (seed + 1))]
    (run_dir / 'eval.csv').write_text('step,phase,success\n' + ''.join(f'{s},offline,{v}\n' for s, v in rows))
    if score is not None or online is not None:
        final = dict(score=score) if mode == 'offline' else dict(offline_score=score, online_score=online, score=online)
        (run_dir / 'final.json').write_text(json.dumps(final))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    # offline, cube-single: FAV seeds 0-1 (task2 seed 1 unfinished, task3 only FAV), FQL seeds 0-2.
    for task, fav, fql in [(1, [10, 20], [30, 50, 40]), (2, [40, None], [5, 15, 25]), (3, [60, 80], [])]:
        for seed, score in enumerate(fav):
            _run(root, 'offline', TASK.format(task), 'fav', seed, score)
        for seed, score in enumerate(fql):
            _run(root, 'offline', TASK.format(task), 'fql', seed, score)
    # o2o, scene task2: FAV offline → online (30 → 60, 40 → 80); RLPD has no offline phase.
    _run(root, 'o2o', SCENE, 'fav', 0, 30, 60)
    _run(root, 'o2o', SCENE, 'fav', 1, 40, 80)
    _run(root, 'o2o', SCENE, 'rlpd', 0, None, 50, offline_steps=0)
    return root


@pytest.fixture(scope='module')
def out(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp('results')
    assert tables.main([str(runs), '--out', str(out), '--published', '--reps', '200']) == 0
    return out


def _rows(markdown, first):
    return [line for line in markdown.splitlines() if line.startswith(f'| {first} |')]


def test_markdown_numbers_missing_runs_and_uneven_seeds(out):
    md = (out / 'offline.md').read_text()
    task_rows = _rows(md, 'cube-single-play')
    # Per task: mean ± population std over seeds; unfinished run marked, never counted as 0; bold: the best
    # of two or more numbers.
    assert task_rows[0] == '| cube-single-play | task1 | 15.0 ± 5.0 | **40.0 ± 8.2** |'
    assert task_rows[1] == '| cube-single-play | task2 | **40.0*** | 15.0 ± 8.2 |'
    assert task_rows[2] == '| cube-single-play | task3 | 70.0 ± 10.0 | —* |'
    # Per environment: FAV (15 + 40 + 70) / 3 = 41.7, one seed finished on all three tasks so no ±;
    # FQL over its 2 tasks: per-seed means 17.5, 32.5, 32.5 → 27.5 ± 7.1.
    # Not bolded: the two means are over different tasks.
    assert task_rows[3] == '| cube-single-play | 41.7 (3/5 tasks)* | 27.5 ± 7.1 (2/5 tasks)* |'
    assert '4 run(s) missing or unfinished' in md and 'FAV 0-1; FQL 0-2' in md
    assert [tables._seed_text(s) for s in ([0], [0, 3, 5], [2, 3, 4])] == ['0', '0,3,5', '2-4']  # as --seeds
    (suite,) = [line for line in md.splitlines() if line.startswith('| average over tasks with runs')]
    assert suite.startswith('| average over tasks with runs (the suite has 56) | 41.7 (3/56 tasks)* | 27.5 ± 7.1 (2')

    o2o = (out / 'o2o.md').read_text()
    assert _rows(o2o, 'scene-play')[0] == '| scene-play | task2 | **35.0 ± 5.0 → 70.0 ± 10.0** | — → 50.0 |'
    assert 'All runs finished' in o2o


def test_an_o2o_row_counts_its_tasks_by_the_online_score(out):
    # RLPD has no offline score on scene task2, but its online score covers that 1 task of scene's 5: its
    # environment cell reads (1/5 tasks), as FAV's does, not (0/5 tasks) from the offline half.
    (_, family_row) = _rows((out / 'o2o.md').read_text(), 'scene-play')
    assert family_row == '| scene-play | **35.0 ± 5.0 → 70.0 ± 10.0** (1/5 tasks) | — → 50.0 (1/5 tasks) |'


def test_rows_with_runs_on_unofficial_data_are_marked(tmp_path):
    runs, out = tmp_path / 'runs', tmp_path / 'out'
    _run(runs, 'offline', TASK.format(1), 'fav', 0, 10, origin='generated')
    _run(runs, 'offline', TASK.format(1), 'fav', 1, 20, origin='generated')
    _run(runs, 'offline', TASK.format(2), 'fav', 0, 30, origin='official')
    _run(runs, 'offline', TASK.format(3), 'fav', 1, None, origin='regenerated')  # unfinished: not counted
    _run(runs, 'offline', SCENE, 'fav', 0, 40)  # origin not recorded: not marked
    (runs / 'offline' / TASK.format(3) / 'fav' / 'seed1' / 'stopped.json').write_text('{"error": "non-finite"}')
    assert tables.main([str(runs), '--out', str(out), '--reps', '50']) == 0
    md = (out / 'offline.md').read_text()
    assert _rows(md, 'cube-single-play')[:2] == [
        '| cube-single-play | task1 † | 15.0 ± 5.0 |',
        '| cube-single-play | task2 | 30.0* |',
    ]
    assert '| cube-single-play † | 22.5 (2/5 tasks)* |' in md and '| scene-play | 40.0 (1/5 tasks)* |' in md
    assert '| average over tasks with runs (the suite has 56) † |' in md
    assert '(2 on a small generated dataset (--dataset-episodes))' in md and 'regenerated' not in md
    assert 'Of the runs missing or unfinished, 1 stopped on non-finite values' in md  # task3's seed 1
    assert r'task1 $^\dagger$ & $15.0 \pm 5.0$' in (out / 'offline.tex').read_text()


def test_the_notes_count_stopped_runs_apart_from_other_unfinished_ones(tmp_path):
    for seed, score in enumerate([10, None, None]):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', seed, score)
    (tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed1' / 'stopped.json').write_text('{"error": "non-finite"}')
    md = tables.to_markdown(tables.build_tables(ModeResults('offline', load_runs(str(tmp_path)))))
    assert '2 run(s) missing or unfinished' in md  # seed 2 is still training (or was killed): not stopped
    assert 'Of the runs missing or unfinished, 1 stopped on non-finite values' in md


def test_bold_marks_every_best_of_comparable_means_only(tmp_path):
    runs, out = tmp_path / 'runs', tmp_path / 'out'
    for agent, scores in (('fav', [10, 90]), ('fql', [10, 70]), ('ifql', [5, None])):
        for task, score in enumerate(scores, start=1):
            if score is not None:
                _run(runs, 'offline', TASK.format(task), agent, 0, score)
    assert tables.main([str(runs), '--out', str(out), '--reps', '50']) == 0
    md = (out / 'offline.md').read_text()
    rows = _rows(md, 'cube-single-play')
    assert rows[0] == '| cube-single-play | task1 | **10.0** | **10.0** | 5.0 |'  # a tie: both bold
    assert rows[1] == '| cube-single-play | task2 | **90.0** | 70.0 | —* |'
    # IFQL's mean covers task1 only: FAV and FQL cover two tasks, so no cell of the row is bold.
    assert rows[2] == '| cube-single-play | 50.0 (2/5 tasks) | 40.0 (2/5 tasks) | 5.0 (1/5 tasks)* |'


def test_a_row_over_all_its_tasks_names_no_task_count(tmp_path):
    for task in range(1, 6):
        _run(tmp_path, 'offline', TASK.format(task), 'fav', 0, 10 * task)
    md = tables.to_markdown(tables.build_tables(ModeResults('offline', load_runs(str(tmp_path)))))
    # (10 + 20 + 30 + 40 + 50) / 5 over every task of the family: no "(5/5 tasks)"; the suite's row has 5 of 56.
    assert _rows(md, 'cube-single-play')[5] == '| cube-single-play | 30.0 |'
    assert '| average over tasks with runs (the suite has 56) | 30.0 (5/56 tasks) |' in md


def test_the_suite_average_counts_the_suites_tasks_only(tmp_path):
    """An O2O run on a task outside the 30 O2O tasks gets its rows, but not a place in the suite's numbers."""
    runs, out = tmp_path / 'runs', tmp_path / 'out'
    _run(runs, 'o2o', SCENE, 'fav', 0, 30, 80)
    _run(runs, 'o2o', TASK.format(1), 'fav', 0, 50, 100)  # cube-single: offline suite only
    assert tables.main([str(runs), '--out', str(out), '--reps', '50']) == 0
    md = (out / 'o2o.md').read_text()
    assert _rows(md, 'cube-single-play')[0] == '| cube-single-play | task1 | 50.0 → 100.0 |'
    (suite,) = [line for line in md.splitlines() if line.startswith('| average over tasks with runs')]
    assert suite == '| average over tasks with runs (the suite has 30) | 30.0 → 80.0 (1/30 tasks) |'
    assert f'1 task(s) with runs are not in the o2o suite ({TASK.format(1)})' in md
    assert (out / 'o2o_rliable.md').exists() and '1 task(s)' in (out / 'o2o_rliable.md').read_text()


def test_latex_text_escapes_every_special_character():
    text = tables._latex_text('FAV[name=a&b#c_d$e%f{g}h~i^j\\k<l>m]')
    assert text == (r'FAV[name=a\&b\#c\_d\$e\%f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k$<$l$>$m]')


def test_latex_numbers(out):
    tex = (out / 'offline.tex').read_text()
    assert r'cube-single-play & task1 & $15.0 \pm 5.0$ & $\mathbf{40.0 \pm 8.2}$ \\' in tex
    assert r'cube-single-play & task3 & $70.0 \pm 10.0$ & $\mbox{--}$$^*$ \\' in tex
    assert r'cube-single-play & $41.7$ (3/5 tasks)$^*$ & $27.5 \pm 7.1$ (2/5 tasks)$^*$ \\' in tex
    assert tex.count(r'\begin{tabular}') == 3 == tex.count(r'\end{tabular}') and '±' not in tex
    # Text columns (environment, task) left-aligned, one centred column per agent (FAV, FQL).
    assert r'\begin{tabular}{llcc}' in tex and r'\begin{tabular}{lcc}' in tex
    o2o = (out / 'o2o.tex').read_text()
    assert r'$\mathbf{35.0 \pm 5.0 \rightarrow 70.0 \pm 10.0}$ & $\mbox{--} \rightarrow 50.0$' in o2o


def test_published_numbers_are_labelled(out):
    md = (out / 'o2o.md').read_text()
    o2o_published = '| 32 → 69 | 0 → 44 | 26 → 54 | 32 → 41 | 16 → 39 | 21 → 36 | 6 → 7 |'  # FAV, RLPD, then not run
    assert f'| published in the FAV paper (30 tasks; not measured here) {o2o_published}' in md
    offline = (out / 'offline.md').read_text()
    published = '| published in the FAV paper (56 tasks; not measured here) |'
    assert f'{published} 54 | 48 | 45 | 40 | 34 | 26 | 20 | 19 |' in offline
    (suite,) = [line for line in offline.splitlines() if line.startswith('| average over tasks with runs')]
    assert suite.endswith('27.5 ± 7.1 (2/56 tasks)* | not run | not run | not run | not run | not run | not run |')


def test_rliable_aggregates_and_figures(runs, out):
    from rliable import metrics

    from launch import aggregates

    # Tasks where every agent has a finished run: task1, task2. FAV: 1 run per task (task2 has one) →
    # [10, 40]: IQM = mean = 25. P(FAV > FQL): task1 0 (10 < 30, 40, 50), task2 1 (40 > 5, 15, 25) → 0.5.
    results = ModeResults('offline', load_runs(str(runs)))
    found = aggregates.compute(results, reps=300)
    assert found.tasks == [TASK.format(1), TASK.format(2)] and found.runs == {'fav': 1, 'fql': 3}
    assert found.estimates['fav']['IQM'][0] == pytest.approx(25.0)
    assert found.estimates['fql']['Mean'][0] == pytest.approx(27.5)
    point, low, high = found.improvement['fql']
    assert point == pytest.approx(0.5) and low <= point <= high
    # The vectorized probability of improvement is rliable's, ties included.
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (5, 7)).astype(float), rng.integers(0, 4, (3, 7)).astype(float)
    assert aggregates.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))

    rliable_md = (out / 'offline_rliable.md').read_text()
    # One FAV run per task: no interval for FAV, nor for P(FAV > FQL); FQL's three runs have theirs.
    assert '| FAV | 1 | 25.0 | 25.0 |  |' in rliable_md
    assert '| FQL | 3 | 27.5 [' in rliable_md and rliable_md.count(' | 0.50 |') == 1
    assert 'No CI for an agent with 1 run per task' in rliable_md
    pngs = [
        'summary.png',
        'offline_intervals.png',
        'offline_improvement.png',
        'o2o_intervals.png',
        *(f'curves/offline/{TASK.format(k)}.png' for k in (1, 2, 3)),
        f'curves/o2o/{SCENE}.png',
    ]
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(b'\x89PNG') and len(data) > 2000, name


def test_iqm_drops_the_outer_quarters_and_the_mean_does_not(tmp_path):
    from launch import aggregates

    # 8 runs on one task with one outlier: the IQM is the mean of the middle 4, the mean moves with it.
    scores = [0, 1, 2, 3, 4, 5, 6, 100]
    for seed, score in enumerate(scores):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', seed, score)
        _run(tmp_path, 'offline', TASK.format(1), 'fql', seed, 50 - seed)
    found = aggregates.compute(ModeResults('offline', load_runs(str(tmp_path))), reps=50)
    assert found.estimates['fav']['IQM'][0] == pytest.approx((2 + 3 + 4 + 5) / 4)
    assert found.estimates['fav']['Mean'][0] == pytest.approx(sum(scores) / 8)
    # P(FAV > FQL) over the 64 pairs: only the outlier wins (8 of 64).
    assert found.improvement['fql'][0] == pytest.approx(8 / 64)


def test_a_note_names_the_settings_that_differ_among_an_agents_tasks_of_one_environment(tmp_path):
    """FAV's cube-single tasks ran with β 1 and 3 (and one with 50 evaluation episodes): the row averages them,
    which a note says. Settings that differ between environments (each has its own σ) are not named."""
    for task, beta in ((1, 1.0), (2, 3.0)):
        _run(tmp_path, 'offline', TASK.format(task), 'fav', 0, 40, agent_config=dict(beta=beta, sigma=0.05))
    _run(
        tmp_path,
        'offline',
        TASK.format(3),
        'fav',
        0,
        40,
        agent_config=dict(beta=1.0, sigma=0.05),
        options=dict(eval_episodes=50),
    )
    _run(tmp_path, 'offline', SCENE, 'fav', 0, 40, agent_config=dict(beta=0.5, sigma=0.1))
    _run(tmp_path, 'offline', SCENE.replace('task2', 'task3'), 'fav', 0, 40, agent_config=dict(beta=0.5, sigma=0.1))
    _run(tmp_path, 'offline', TASK.format(1), 'fql', 0, 40, agent_config=dict(alpha=300.0))
    notes = tables.build_tables(ModeResults('offline', load_runs(str(tmp_path))))[0].notes
    mixed = [n for n in notes if 'different settings' in n]
    assert mixed == [
        "cube-single-play: FAV's tasks were run with different settings (agent.beta=1.0 vs 3.0, "
        'eval_episodes=unset vs 50); its row averages them (--variant beta splits them into columns).'
    ]


def test_an_agent_with_no_finished_run_yet_is_left_out_of_rliable_with_a_note(tmp_path):
    """IQL's only run has just started: FAV and FQL are still aggregated (an empty overlap of tasks used to
    drop every rliable output without a word), and the table says IQL was left out."""
    for task in (1, 2):
        for seed in (0, 1):
            _run(tmp_path / 'runs', 'offline', TASK.format(task), 'fav', seed, 40 + 10 * seed)
            _run(tmp_path / 'runs', 'offline', TASK.format(task), 'fql', seed, 20 + 10 * seed)
    _run(tmp_path / 'runs', 'offline', TASK.format(1), 'iql', 0, None)
    out = tmp_path / 'out'
    assert tables.main([str(tmp_path / 'runs'), '--out', str(out), '--reps', '10']) == 0
    rliable_md = (out / 'offline_rliable.md').read_text()
    assert '| FAV | 2 | 45.0 [' in rliable_md and '| FQL | 2 | 25.0 [' in rliable_md and '| IQL |' not in rliable_md
    assert "Left out: IQL, with no finished run on the suite's tasks yet." in rliable_md
    assert (out / 'offline_intervals.png').exists() and (out / 'offline_improvement.png').exists()


def test_tables_say_why_there_are_no_rliable_aggregates(tmp_path, capsys):
    """FAV ran task 1 and FQL task 2: no task to aggregate over, which the tables print instead of silently
    writing no rliable files; O2O runs only on a task outside the O2O suite likewise."""
    _run(tmp_path / 'runs', 'offline', TASK.format(1), 'fav', 0, 40)
    _run(tmp_path / 'runs', 'offline', TASK.format(2), 'fql', 0, 20)
    _run(tmp_path / 'runs', 'o2o', TASK.format(1), 'fav', 0, 30, 60)
    out = tmp_path / 'out'
    assert tables.main([str(tmp_path / 'runs'), '--out', str(out), '--reps', '10']) == 0
    printed = capsys.readouterr().out
    assert 'offline: no rliable aggregates: no task of the suite has finished runs of every agent' in printed
    assert 'o2o: no rliable aggregates or suite average: no run is on a task of the o2o suite' in printed
    assert not list(out.glob('*_rliable.*'))


def test_the_rliable_matrix_keeps_the_lowest_seeds_in_number_order_not_folder_order(tmp_path):
    from launch import aggregates

    # FAV has seeds 0, 1, 2, 10 on task1 but only 0, 1, 2 on task2: 3 runs per task, the seeds 0, 1, 2. The
    # folders sort seed0, seed1, seed10, seed2, so taking the first three found would use seed 10 (score 90).
    for seed, score in ((0, 10), (1, 20), (2, 30), (10, 90)):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', seed, score)
    for seed in (0, 1, 2):
        _run(tmp_path, 'offline', TASK.format(2), 'fav', seed, 50)
    tasks, matrices = aggregates.score_matrices(ModeResults('offline', load_runs(str(tmp_path))))
    assert tasks == [TASK.format(1), TASK.format(2)]
    np.testing.assert_array_equal(matrices['fav'], [[10, 50], [20, 50], [30, 50]])


def test_the_bootstrap_draws_as_many_replicates_as_asked(tmp_path):
    from launch import aggregates

    for seed, score in enumerate([0, 20, 40, 60]):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', seed, score)
        _run(tmp_path, 'offline', TASK.format(1), 'fql', seed, score + 10)
    results = ModeResults('offline', load_runs(str(tmp_path)))
    # One replicate: every interval is that replicate's value, a point...
    one = aggregates.compute(results, reps=1)
    intervals = [*(e[m][1:] for e in one.estimates.values() for m in ('IQM', 'Mean')), one.improvement['fql'][1:]]
    assert all(low == high for low, high in intervals)
    # ...where more replicates spread.
    many = aggregates.compute(results, reps=100)
    intervals = [*(e[m][1:] for e in many.estimates.values() for m in ('IQM', 'Mean')), many.improvement['fql'][1:]]
    assert all(low < high for low, high in intervals)


def test_the_bootstrap_intervals_are_the_same_on_every_run_of_the_tables(tmp_path):
    from launch import aggregates

    for seed, score in enumerate([0, 20, 40, 60, 80]):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', seed, score)
        _run(tmp_path, 'offline', TASK.format(1), 'fql', seed, 90 - 2 * score // 3)
    results = ModeResults('offline', load_runs(str(tmp_path)))
    first = aggregates.compute(results, reps=50)
    np.random.random(7)  # whatever drew from NumPy's global generator in between
    # Rerunning the tables on the same runs gives the same intervals, not a new draw each time...
    assert aggregates.compute(results, reps=50) == first
    # ...and they are a draw of the bootstrap: another seed gives others.
    assert aggregates.compute(results, reps=50, seed=1).estimates != first.estimates


def test_without_fav_no_agent_is_compared_with_the_others(tmp_path):
    from launch import aggregates

    for agent, score in (('fql', 30), ('iql', 20)):
        _run(tmp_path, 'offline', TASK.format(1), agent, 0, score)
    found = aggregates.compute(ModeResults('offline', load_runs(str(tmp_path))), reps=10)
    assert list(found.estimates) == ['fql', 'iql'] and found.reference is None and found.improvement == {}
    table = tables.aggregate_table(found)  # no P(… > X) column of blanks, and no note of one
    assert table.header == ['agent', 'runs per task', 'IQM', 'Mean'] and all(len(row) == 4 for row in table.rows)
    assert not any('probability of improvement' in note for note in table.notes)


def test_the_rliable_table_puts_each_number_in_its_column():
    from launch.aggregates import Aggregates

    estimates = {'fav': {'IQM': (20, 10, 30), 'Mean': (25, 15, 35)}, 'fql': {'IQM': (5, 1, 9), 'Mean': (6, 2, 8)}}
    found = Aggregates('offline', ['t'], {'fav': 4, 'fql': 3}, estimates, {'fql': (0.6, 0.4, 0.8)}, 'fav')
    table = tables.aggregate_table(found)
    assert table.header == ['agent', 'runs per task', 'IQM', 'Mean', 'P(FAV > X)']
    assert table.rows == [  # point [low, high]
        ['FAV', '4', '20.0 [10.0, 30.0]', '25.0 [15.0, 35.0]', ''],
        ['FQL', '3', '5.0 [1.0, 9.0]', '6.0 [2.0, 8.0]', '0.60 [0.40, 0.80]'],
    ]
    assert not any('No CI' in note for note in table.notes)
    # An agent with one run per task: its estimates and its P have no interval (the bootstrap's would be [x, x]).
    single = Aggregates('offline', ['t'], {'fav': 4, 'fql': 1}, estimates, {'fql': (0.6, 0.6, 0.6)}, 'fav')
    assert tables.aggregate_table(single).rows[1] == ['FQL', '1', '5.0', '6.0', '0.60']
    assert tables.aggregate_table(single).rows[0][2:4] == ['20.0 [10.0, 30.0]', '25.0 [15.0, 35.0]']
    reference_alone = Aggregates('offline', ['t'], {'fav': 1, 'fql': 3}, estimates, {'fql': (0.6, 0.6, 0.6)}, 'fav')
    assert tables.aggregate_table(reference_alone).rows[1][4] == '0.60'
    assert any('No CI for an agent with 1 run per task' in note for note in tables.aggregate_table(single).notes)


def test_the_figures_mark_an_agent_with_one_run_per_task_as_having_no_interval(tmp_path, monkeypatch):
    from launch import figures
    from launch.aggregates import Aggregates

    estimates = {a: {'IQM': (20, 10, 30), 'Mean': (25, 15, 35)} for a in ('fav', 'fql', 'iql')}
    improvement = {'fql': (0.6, 0.6, 0.6), 'iql': (0.7, 0.5, 0.9)}
    found = Aggregates('offline', ['t'], {'fav': 3, 'fql': 1, 'iql': 2}, estimates, improvement, 'fav')
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.interval_plot(found, str(tmp_path / 'i.png'))
    names = [label.get_text() for label in saved[0].axes[0].get_yticklabels()]
    assert names == ['FAV', 'FQL (1 run, no CI)', 'IQL']
    figures.improvement_plot(found, str(tmp_path / 'p.png'))
    left, right = saved[1].axes  # the reference's names on the left, the others' on the right
    assert [label.get_text() for label in left.get_yticklabels()] == ['FAV', 'FAV']
    assert [label.get_text() for label in right.get_yticklabels()] == ['FQL (1 run, no CI)', 'IQL']
    # The reference with 1 run: every probability's interval is the point alone.
    alone = Aggregates('offline', ['t'], {'fav': 1, 'fql': 3}, estimates, {'fql': (0.6, 0.6, 0.6)}, 'fav')
    figures.improvement_plot(alone, str(tmp_path / 'q.png'))
    assert [label.get_text() for label in saved[2].axes[0].get_yticklabels()] == ['FAV (1 run, no CI)']


def test_one_line_errors_name_the_file(runs, tmp_path, capsys):
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert tables.main([str(empty), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(empty) in err and 'no run directories' in err

    bad = tmp_path / 'bad'
    _run(bad, 'offline', TASK.format(1), 'fav', 0, 10)
    corrupt = bad / 'offline' / TASK.format(1) / 'fav' / 'seed0' / 'final.json'
    corrupt.write_text('{"score": 1')
    result = subprocess.run(
        [sys.executable, 'launch/tables.py', str(bad), '--out', str(tmp_path / 'out')],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(corrupt) in result.stderr
    assert not (tmp_path / 'out').exists()  # nothing written


def test_a_run_of_an_unknown_mode_is_refused_in_one_line_not_left_out(tmp_path, capsys):
    _run(tmp_path / 'runs', 'online', TASK.format(1), 'fav', 0)  # unfinished: no final.json to trip on
    assert tables.main([str(tmp_path / 'runs'), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip()
    config = tmp_path / 'runs' / 'online' / TASK.format(1) / 'fav' / 'seed0' / 'config.json'
    assert len(err.splitlines()) == 1 and str(config) in err and "mode 'online'" in err
    assert not (tmp_path / 'out').exists()


def test_out_in_folders_that_do_not_exist_yet_makes_them_and_a_failure_removes_them(tmp_path, capsys):
    """`--out results/prior` on a fresh clone, where results/ is not there yet."""
    root = tmp_path / 'runs'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    out = tmp_path / 'new' / 'deeper' / 'prior'
    assert tables.main([str(root), '--out', str(out), '--reps', '20']) == 0
    assert (out / 'offline.md').is_file() and '| FAV |' in (out / 'offline.md').read_text()

    empty = tmp_path / 'empty'
    empty.mkdir()
    assert tables.main([str(empty), '--out', str(tmp_path / 'other' / 'deeper' / 'out')]) == 2
    assert 'no run directories' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['empty', 'new', 'runs']  # other/ made, then removed


@pytest.mark.parametrize('score', ['NaN', '150', '-1', 'true', '"90"'])
def test_a_final_score_outside_0_to_100_is_refused_in_one_line(score, tmp_path, capsys):
    root = tmp_path / 'runs'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    final = root / 'offline' / TASK.format(1) / 'fav' / 'seed0' / 'final.json'
    final.write_text(f'{{"score": {score}}}')
    assert tables.main([str(root), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'error: {final}: score is {json.loads(score)!r}, expected a number in 0..100 (or null)'
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize(
    'key, value, expected',
    [
        ('agent_config', None, 'a JSON object'),
        ('agent_config', [64, 64], 'a JSON object'),
        ('agent', 3, 'a string'),
        ('mode', ['offline'], 'a string'),
        ('task', 5, 'a task name'),
        ('seed', 1.5, 'an integer'),  # was read as seed 1
        ('seed', True, 'an integer'),
        ('seed', 1e400, 'an integer'),  # inf: int() raised OverflowError
        ('offline_steps', '100', 'an integer'),
    ],
)
def test_a_config_value_of_the_wrong_type_is_refused_in_one_line(key, value, expected, tmp_path, capsys):
    root = tmp_path / 'runs'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10, agent_config={'beta': 1.0})
    _run(root, 'offline', TASK.format(1), 'fav', 1, 20, agent_config={'beta': 1.0})
    path = root / 'offline' / TASK.format(1) / 'fav' / 'seed0' / 'config.json'
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, key: value}))
    assert tables.main([str(root), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'error: {path}: {key} is {json.loads(json.dumps(value))!r}, expected {expected}'
    assert not (tmp_path / 'out').exists()


def _tables_of_two_agents_and_two_modes(tmp_path):
    """Runs of FAV and FQL offline and FAV O2O, and their tables in out; → runs folder, out, the files written."""
    root, out = tmp_path / 'runs', tmp_path / 'out'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    _run(root, 'offline', TASK.format(1), 'fql', 0, 20)
    _run(root, 'o2o', SCENE, 'fav', 0, 30, 60)
    assert tables.main([str(root), '--out', str(out), '--reps', '50']) == 0
    first = {p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file()}
    return root, out, first


def test_a_rerun_into_the_same_out_removes_only_its_own_earlier_files(tmp_path, capsys):
    root, out, first = _tables_of_two_agents_and_two_modes(tmp_path)
    assert {'o2o.md', 'offline_improvement.png', f'curves/o2o/{SCENE}.png'} <= first
    (out / 'notes.md').write_text('mine')
    # The same folder without the O2O runs and without FQL: the O2O tables and the FAV-vs-FQL plot go.
    shutil.rmtree(root / 'o2o')
    shutil.rmtree(root / 'offline' / TASK.format(1) / 'fql')
    capsys.readouterr()
    assert tables.main([str(root), '--out', str(out), '--reps', '50']) == 0
    second = {p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file()}
    gone = sorted(first - second)
    assert 'o2o.md' in gone and 'offline_improvement.png' in gone and f'curves/o2o/{SCENE}.png' in gone
    assert second - first == {'notes.md'} and (out / 'notes.md').read_text() == 'mine'
    assert not (out / 'curves' / 'o2o').exists() and (out / 'curves' / 'offline').is_dir()  # emptied, so removed
    assert f'removed {len(gone)} file(s) an earlier run wrote there that this one did not: ' in capsys.readouterr().out


def test_a_rerun_without_the_tables_extra_keeps_the_earlier_figures_and_aggregates(tmp_path, capsys, monkeypatch):
    root, out, first = _tables_of_two_agents_and_two_modes(tmp_path)
    extra = {n for n in first if tables.made_by_the_extra(n)}
    assert {'summary.png', 'offline_rliable.md', f'curves/o2o/{SCENE}.png'} <= extra
    # rliable missing on this machine (as on a node without the extra); the O2O runs are gone too.
    import launch

    monkeypatch.delattr(launch, 'aggregates', raising=False)
    monkeypatch.setitem(sys.modules, 'launch.aggregates', None)
    shutil.rmtree(root / 'o2o')
    capsys.readouterr()
    assert tables.main([str(root), '--out', str(out), '--reps', '50']) == 0
    printed = capsys.readouterr().out
    second = {p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file()}
    assert first - second == {'o2o.md', 'o2o.tex'}  # the plain tables of runs no longer there go; nothing else
    assert 'rliable aggregates and figures skipped' in printed and f'kept {len(extra)} figure and rliable' in printed
    # Still listed as the tables' own: a run with the extra removes the O2O figures it no longer makes.
    monkeypatch.undo()
    assert tables.main([str(root), '--out', str(out), '--reps', '50']) == 0
    third = {p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file()}
    assert f'curves/o2o/{SCENE}.png' not in third and 'summary.png' in third


def test_an_outputs_list_naming_files_outside_out_removes_none_of_them(tmp_path, capsys):
    root, out = tmp_path / 'runs', tmp_path / 'out'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    out.mkdir()
    outside, absolute = tmp_path / 'keep.txt', tmp_path / 'absolute.txt'
    outside.write_text('not the tables')
    absolute.write_text('not the tables')
    # An edited (or foreign) list: only files inside --out are ever the tables' to remove.
    (out / tables.OUTPUTS_LIST).write_text(f'../keep.txt\nsub/../../keep.txt\n{absolute}\n')
    assert tables.main([str(root), '--out', str(out), '--reps', '50']) == 0
    assert outside.read_text() == 'not the tables' and absolute.read_text() == 'not the tables'
    assert 'removed' not in capsys.readouterr().out


def test_runs_of_different_lengths_do_not_share_a_column(tmp_path, capsys):
    """A 300-step trial of seed 0 beside 1M-step runs of seeds 1-2 would be averaged into one cell."""
    root = tmp_path / 'runs'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 90, offline_steps=300)
    for seed in (1, 2):
        _run(root, 'offline', TASK.format(1), 'fav', seed, 40, offline_steps=1_000_000)
    _run(root, 'offline', TASK.format(1), 'fql', 0, 30, offline_steps=300)  # another column: its own length
    out = tmp_path / 'out'
    assert tables.main([str(root), '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'seed0 (300 offline steps)' in err and '(1000000 offline)' in err
    assert 'different lengths' in err and not out.exists()
    assert err.endswith('or split them with --variant offline_steps (or online_steps)')  # which works:
    split = tmp_path / 'split'
    assert tables.main([str(root), '--out', str(split), '--variant', 'offline_steps', '--reps', '50']) == 0
    assert 'FAV[offline_steps=300]' in (split / 'offline.md').read_text()
    # A column's length is one across its tasks too: a trial on task1 beside a full run on task2 would be
    # averaged into the environment's row.
    other = tmp_path / 'other'
    _run(other, 'offline', TASK.format(1), 'fav', 0, 90, offline_steps=300)
    _run(other, 'offline', TASK.format(2), 'fav', 0, 40, offline_steps=1_000_000)
    assert tables.main([str(other), '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'different lengths' in err and TASK.format(2) in err and not out.exists()


def test_o2o_runs_of_different_online_lengths_do_not_share_a_column(tmp_path, capsys):
    root = tmp_path / 'runs'
    for seed, online_steps in ((0, 300), (1, 1_000_000)):
        _run(root, 'o2o', SCENE, 'fav', seed, 30, 60, options=dict(online_steps=online_steps))
    assert tables.main([str(root), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err.strip()
    assert '(100 offline + 300 online steps)' in err and '(100 offline + 1000000 online)' in err
    assert 'different lengths' in err and not (tmp_path / 'out').exists()


def test_variants_split_an_agent_into_rows(tmp_path, capsys):
    """--variant prior_score: FAV's runs with each prior score get their own column and rliable row, the
    first FAV variant is compared with every other row; FQL (no such setting) keeps its name."""
    root = tmp_path / 'runs'
    scores = {'clipped': [[50, 70], [20, 40]], 'softmax': [[10, 30], [0, 10]]}  # [task][seed]
    for form, per_task in scores.items():
        for task, seeds in enumerate(per_task, start=1):
            for seed, score in enumerate(seeds):
                settings = dict(prior_score=form, hidden_dims=[64, 64])
                _run(root, 'offline', TASK.format(task), 'fav', seed, score, agent_config=settings, folder=form)
    for task in (1, 2):
        _run(root, 'offline', TASK.format(task), 'fql', 0, 35, agent_config=dict(alpha=300.0))
    out = tmp_path / 'out'
    assert tables.main([str(root), '--out', str(out), '--variant', 'prior_score', '--reps', '200']) == 0
    md = (out / 'offline.md').read_text()
    assert '| environment | task | FAV[prior_score=clipped] | FAV[prior_score=softmax] | FQL |' in md
    assert _rows(md, 'cube-single-play')[0].endswith('| task1 | **60.0 ± 10.0** | 20.0 ± 10.0 | 35.0 |')
    rliable_md = (out / 'offline_rliable.md').read_text()
    assert 'P(FAV[prior_score=clipped] > X)' in rliable_md
    # Every clipped score beats every softmax score on both tasks: P = 1; against FQL's 35: task1 1 (50, 70),
    # task2 0.5 (20 < 35 < 40) → 0.75.
    assert '| FAV[prior_score=softmax] | 2 | ' in rliable_md and '| 1.00 [1.00, 1.00] |' in rliable_md
    assert '| FQL | 1 | 35.0 | 35.0 | 0.75 |' in rliable_md
    # --published: each FAV variant column shows FAV's published number, and no extra FAV column says "not run".
    published = tmp_path / 'published'
    assert tables.main([str(root), '--out', str(published), '--variant', 'prior_score', '--published']) == 0
    suite_md = (published / 'offline.md').read_text().split('suite average')[1]
    assert '| | FAV[prior_score=clipped] | FAV[prior_score=softmax] | FQL | QAM | DSRL | IFQL |' in suite_md.replace(
        '|  |', '| |'
    )
    assert '| published in the FAV paper (56 tasks; not measured here) | 54 | 54 | 48 | 45 | 40 | 34 |' in suite_md

    # Two settings, one of them a list: one label each, and the improvement figure still pairs them.
    both = tmp_path / 'both'
    assert tables.main([str(root), '--out', str(both), '--variant', 'prior_score', '--variant', 'hidden_dims']) == 0
    assert '| FAV[prior_score=softmax; hidden_dims=64x64] | 2 | ' in (both / 'offline_rliable.md').read_text()
    assert (both / 'offline_improvement.png').read_bytes().startswith(b'\x89PNG')

    # Without --variant, two runs of FAV with one seed on one task cannot share a cell: one line naming
    # the setting they differ in, nothing written.
    capsys.readouterr()
    assert tables.main([str(root), '--out', str(tmp_path / 'plain')]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'both fav seed 0' in err and '--variant prior_score' in err
    assert not (tmp_path / 'plain').exists()

    assert tables.main([str(root), '--out', str(tmp_path / 'bad'), '--variant', 'prior_scor']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'prior_scor'" in err and not (tmp_path / 'bad').exists()
    # A field every config.json has, but that names a run (seed, task) or leaves its numbers alone: it split every
    # seed into a column of its own, or was said to be in no run.
    for field in ('seed', 'task', 'code_version'):
        assert tables.main([str(root), '--out', str(tmp_path / 'bad'), '--variant', field]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f'error: --variant {field}: {field} names a run, or does not change its numbers, so it splits no column; '
            'give a field of its agent_config or another of config.json (e.g. balanced_sampling)'
        )
        assert not (tmp_path / 'bad').exists()

    # The same run twice (a copy in another folder) is refused even with --variant.
    twice = tmp_path / 'twice'
    for folder in ('a', 'b'):
        _run(twice, 'offline', TASK.format(1), 'fav', 0, 10, agent_config=dict(prior_score='clipped'), folder=folder)
    assert tables.main([str(twice), '--out', str(tmp_path / 'twice_out'), '--variant', 'prior_score']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'with the same settings' in err and str(twice / 'offline') in err


def test_a_variant_given_twice_splits_the_columns_once(tmp_path):
    for seed, beta in ((0, 1.0), (1, 3.0)):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', 0, 10 + seed, agent_config={'beta': beta}, folder=f'fav{seed}')
    runs = load_runs(str(tmp_path), ['beta', 'beta'])
    assert sorted(r.agent for r in runs) == ['fav[beta=1.0]', 'fav[beta=3.0]']


def test_runs_told_apart_by_a_run_level_setting(tmp_path, capsys):
    """FQL with and without balanced sampling: refused in one line naming that setting, split into two
    columns by --variant balanced_sampling; settings that do not change the numbers are not compared."""
    root = tmp_path / 'runs'
    for balanced, score in ((False, 20), (True, 60)):
        options = dict(balanced_sampling=balanced, code_version=f'v{score}', wandb='disabled' if balanced else 'online')
        _run(root, 'offline', TASK.format(1), 'fql', 0, score, folder=f'fql{int(balanced)}', options=options)
    assert tables.main([str(root), '--out', str(tmp_path / 'plain')]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith('they differ in balanced_sampling: tell them apart with --variant balanced_sampling')
    out = tmp_path / 'out'
    assert tables.main([str(root), '--out', str(out), '--variant', 'balanced_sampling', '--reps', '50']) == 0
    md = (out / 'offline.md').read_text()
    assert '| FQL[balanced_sampling=False] | FQL[balanced_sampling=True] |' in md
    assert _rows(md, 'cube-single-play')[0].endswith('| task1 | 20.0 | **60.0** |')
    # Two copies of one run that differ only in the code's version and wandb: the same settings.
    copies = tmp_path / 'copies'
    for folder, (version, wandb) in {'a': ('v1', 'online'), 'b': ('v2', 'disabled')}.items():
        options = dict(balanced_sampling=True, code_version=version, wandb=wandb)
        _run(copies, 'offline', TASK.format(1), 'fql', 0, 60, folder=folder, options=options)
    capsys.readouterr()
    assert tables.main([str(copies), '--out', str(tmp_path / 'copies_out')]) == 2
    assert capsys.readouterr().err.strip().endswith('with the same settings; pass a folder that holds only one of them')
    # The evaluation's env copies are part of the result (each copy's episodes are seeded by its index).
    split = tmp_path / 'split'
    for envs in (1, 4):
        options = dict(eval_envs=envs, max_eval_envs=envs)  # max_eval_envs only caps the worker processes
        _run(split, 'offline', TASK.format(1), 'fql', 0, 60, folder=f'envs{envs}', options=options)
    assert tables.main([str(split), '--out', str(tmp_path / 'split_out')]) == 2
    assert (
        capsys.readouterr().err.strip().endswith('they differ in eval_envs: tell them apart with --variant eval_envs')
    )


def test_runs_of_one_cell_with_other_settings_are_refused(tmp_path, capsys):
    """Seed 0 with beta 1 and seed 1 with beta 3 would be averaged into one cell, reported as one setting."""
    root, out = tmp_path / 'runs', tmp_path / 'out'
    fav = dict(beta=1.0, sigma=0.05, hidden_dims=[64, 64])
    options = dict(eval_episodes=50, eval_envs=50, dataset_origin='official', buffer_capacity=1000)
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10, agent_config=fav, options=options)
    _run(root, 'offline', TASK.format(1), 'fav', 1, 30, agent_config={**fav, 'beta': 3.0}, options=options)
    # Other tasks and environments of the column have their own defaults (sigma, beta, ...): not compared.
    _run(root, 'offline', TASK.format(2), 'fav', 0, 20, agent_config={**fav, 'sigma': 0.1}, options=options)
    scene_options = {**options, 'eval_episodes': 10}
    _run(root, 'offline', SCENE, 'fav', 0, 20, agent_config={**fav, 'beta': 0.3}, options=scene_options)
    assert tables.main([str(root), '--out', str(out)]) == 2
    cell = root / 'offline' / TASK.format(1) / 'fav'
    assert capsys.readouterr().err.strip() == (
        f'error: {cell / "seed0"} and {cell / "seed1"} are fav offline runs on {TASK.format(1)} with different '
        'settings (agent.beta=1.0 vs 3.0), which one cell would average; compare them as columns with --variant '
        'beta, or pass a folder that holds runs of one setting'
    )
    assert not out.exists()
    assert tables.main([str(root), '--out', str(out), '--variant', 'beta', '--reps', '20']) == 0
    assert '| task | FAV[beta=0.3] | FAV[beta=1.0] | FAV[beta=3.0] |' in (out / 'offline.md').read_text()

    # A config.json edited by hand, and several differences at once: the first three, named as the CLIs' flags.
    shutil.rmtree(out)
    config_path = cell / 'seed1' / 'config.json'
    config = json.loads(config_path.read_text())
    config['agent_config']['beta'] = 1.0
    config_path.write_text(json.dumps({**config, 'eval_episodes': 5}))
    assert tables.main([str(root), '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert '(eval_episodes=50 vs 5), which one cell' in err and '--variant eval_episodes,' in err
    more = dict(eval_episodes=5, dataset_origin='generated', buffer_capacity=2000, dataset_episodes=3)
    config_path.write_text(json.dumps({**config, **more}))
    assert tables.main([str(root), '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not out.exists()
    differ = 'buffer_capacity=1000 vs 2000, dataset_episodes=unset vs 3, dataset_origin=official vs generated'
    differ += ' and 1 more'  # eval_episodes
    assert f'with different settings ({differ}),' in err and '--variant buffer_capacity,' in err


@pytest.mark.parametrize(
    'field, values',
    [
        ('updates_per_call', (1000, 10)),  # K: the same batches and numbers whatever K (test_loop)
        ('save_every', (100_000, 5_000)),
        ('workers', (8, 2)),
        ('max_eval_envs', (50, 10)),  # evaluated in rounds, with the same results
        ('code_version', ('abc', 'abc-dirty')),
    ],
)
def test_seeds_may_differ_in_what_does_not_change_their_numbers(field, values, tmp_path, capsys):
    root = tmp_path / 'runs'
    for seed, value in enumerate(values):
        _run(root, 'offline', TASK.format(1), 'fav', seed, 10 * (seed + 1), options={field: value})
    assert tables.main([str(root), '--out', str(tmp_path / 'out'), '--reps', '50']) == 0
    assert '15.0 ± 5.0' in (tmp_path / 'out' / 'offline.md').read_text()  # one cell: the mean ± std of both seeds


def test_a_finished_run_with_a_stopped_marker_counts_as_finished(tmp_path, capsys):
    """A run stopped (stopped.json), then resumed to its end, keeps the marker beside its final.json."""
    root = tmp_path / 'runs'
    for seed in (0, 1):
        _run(root, 'offline', TASK.format(1), 'fav', seed, 10 * (seed + 1))
    (root / 'offline' / TASK.format(1) / 'fav' / 'seed1' / STOPPED_NAME).write_text('{}')
    assert tables.main([str(root), '--out', str(tmp_path / 'out'), '--reps', '50']) == 0
    out = capsys.readouterr().out
    assert 'All runs finished' in out and 'stopped' not in out
    assert '15.0 ± 5.0' in (tmp_path / 'out' / 'offline.md').read_text()


def test_out_as_a_link_to_another_file_system(tmp_path, capsys):
    """The tables are written beside the link's target, not beside the link: moving them in is a rename."""
    root = tmp_path / 'runs'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    shm = Path(tempfile.mkdtemp(dir='/dev/shm'))
    try:
        if shm.stat().st_dev == tmp_path.stat().st_dev:
            pytest.skip('/dev/shm is on the file system of the test folder')
        out = tmp_path / 'out'
        out.symlink_to(shm)
        assert tables.main([str(root), '--out', str(out), '--reps', '20']) == 0
        assert (shm / 'offline.md').is_file() and out.is_symlink()
        assert tables.main([str(root), '--out', str(out / 'new'), '--reps', '20']) == 0  # a folder below the link
        assert (shm / 'new' / 'offline.md').is_file()
        assert sorted(p.name for p in tmp_path.iterdir()) == ['out', 'runs'] and not list(shm.glob('.*scratch*'))
        # A link inside --out to another file system: refused before anything is moved, not half done.
        local = tmp_path / 'local'
        local.mkdir()
        (local / 'curves').symlink_to(shm)
        (local / 'offline.md').write_text('old')
        capsys.readouterr()
        assert tables.main([str(root), '--out', str(local), '--reps', '20']) == 2
        assert capsys.readouterr().err.strip() == (
            f'error: --out {local}: {local / "curves"} is on another file system than {local} (a link?): its files '
            'cannot be moved in; pass another --out'
        )
        assert sorted(p.name for p in local.iterdir()) == ['curves', 'offline.md']
        assert (local / 'offline.md').read_text() == 'old'
    finally:
        shutil.rmtree(shm)
    # A link to nothing (scratch space not mounted) is refused: its target is not made.
    gone = tmp_path / 'gone'
    gone.symlink_to(tmp_path / 'unmounted' / 'results')
    capsys.readouterr()
    assert tables.main([str(root), '--out', str(gone / 'prior')]) == 2
    assert capsys.readouterr().err.strip() == (
        f'error: --out {gone / "prior"}: {gone} is a link to {tmp_path / "unmounted" / "results"}, which does not exist'
    )
    assert not (tmp_path / 'unmounted').exists()


def test_an_output_that_cannot_be_replaced_leaves_every_other_one_as_it_was(tmp_path, capsys, monkeypatch):
    root, out = tmp_path / 'runs', tmp_path / 'out'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    _run(root, 'offline', TASK.format(1), 'fql', 0, 20)
    (out / 'summary.png').mkdir(parents=True)  # a folder where a file goes
    (out / 'offline.md').write_text('old')
    assert tables.main([str(root), '--out', str(out), '--reps', '20']) == 2
    err = capsys.readouterr().err.strip()
    assert err == f'error: --out {out}: {out / "summary.png"} is a folder, where a file goes; pass another --out'
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*')) == ['offline.md', 'summary.png']
    assert (out / 'offline.md').read_text() == 'old' and sorted(p.name for p in tmp_path.iterdir()) == ['out', 'runs']
    (out / 'summary.png').rmdir()
    (out / 'curves').write_text('mine')  # a file where a folder goes
    assert tables.main([str(root), '--out', str(out), '--reps', '20']) == 2
    curve = out / 'curves' / 'offline' / f'{TASK.format(1)}.png'
    assert capsys.readouterr().err.strip() == (
        f'error: --out {out}: {out / "curves"} is not a folder, and {curve} goes in it; pass another --out'
    )
    assert sorted(p.name for p in out.iterdir()) == ['curves', 'offline.md'] and (out / 'curves').read_text() == 'mine'
    # An earlier output that is a folder now is someone else's: left alone, not a failure after the moves.
    (out / 'curves').unlink()
    (out / tables.OUTPUTS_LIST).write_text('extra.md\n')
    (out / 'extra.md').mkdir()
    assert tables.main([str(root), '--out', str(out), '--reps', '20']) == 0
    assert (out / 'extra.md').is_dir() and (out / 'offline.md').read_text() != 'old'
    # A folder this cannot write in (read-only to this user; simulated, as root may write anywhere).
    before = {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}
    curves, real = out / 'curves' / 'offline', tempfile.TemporaryFile

    def temporary_file(*args, dir=None, **kwargs):
        if dir == str(curves):
            raise PermissionError(13, 'Permission denied')
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, 'TemporaryFile', temporary_file)
    capsys.readouterr()
    assert tables.main([str(root), '--out', str(out), '--reps', '30']) == 2
    assert capsys.readouterr().err.strip() == (
        f'error: --out {out}: cannot write in {curves} (Permission denied); pass another --out'
    )
    assert {p: p.read_bytes() for p in out.rglob('*') if p.is_file()} == before


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    """'' would be the working directory."""
    _run(tmp_path / 'runs', 'offline', TASK.format(1), 'fav', 0, 10)
    monkeypatch.chdir(tmp_path)
    assert tables.main(['runs', '--out', '']) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ['runs']
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('error: --out is empty: give a folder')
    assert tables.main(['', '--out', 'out']) == 2  # the runs folder empty too: said as such, not ' is not a directory'
    assert capsys.readouterr().err.strip().startswith('error: the runs folder is empty: give the folder that holds')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['runs']


def test_an_out_under_a_file_is_refused(tmp_path, capsys):
    _run(tmp_path / 'runs', 'offline', TASK.format(1), 'fav', 0, 10)
    (tmp_path / 'notes.txt').write_text('mine')
    assert tables.main([str(tmp_path / 'runs'), '--out', str(tmp_path / 'notes.txt' / 'results')]) == 2
    assert capsys.readouterr().err.strip() == (
        f'error: --out {tmp_path / "notes.txt" / "results"}: {tmp_path / "notes.txt"} is a file; pass a folder'
    )
    assert (tmp_path / 'notes.txt').read_text() == 'mine' and sorted(p.name for p in tmp_path.iterdir()) == [
        'notes.txt',
        'runs',
    ]


@pytest.mark.parametrize('last_row', ['1,offline', '1,offline,', '1'])
def test_an_evaluation_log_with_its_last_row_cut_short_is_refused_in_one_line(last_row, tmp_path, capsys):
    root = tmp_path / 'runs'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    log = root / 'offline' / TASK.format(1) / 'fav' / 'seed0' / 'eval.csv'
    log.write_text(f'step,phase,success\n100,offline,0.5\n{last_row}\n')
    assert tables.main([str(root), '--out', str(tmp_path / 'out'), '--reps', '20']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f'error: {log} is not an evaluation log')


@pytest.mark.parametrize(
    'content, words',
    [
        (b'step,success\n1,0.5\n\xd0\xff\n', " is not a readable evaluation log ('utf-8' codec can't decode"),
        (None, ' is not a readable evaluation log ([Errno 21] Is a directory'),  # was blamed on --out
        (b'step,success\n1,0.5\n100,nan\n', ': success at step 100 is nan, expected a rate in 0..1'),
        (b'step,success\n1,-3\n', ': success at step 1 is -3.0, expected a rate in 0..1'),  # was drawn as -300 %
        (b'step,success\n1,0.5\n100,1.5\n', ': success at step 100 is 1.5, expected a rate in 0..1'),  # 150 %
    ],
)
def test_an_unreadable_evaluation_log_or_a_success_outside_0_to_1_is_refused_in_one_line(
    content, words, tmp_path, capsys
):
    root = tmp_path / 'runs'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    log = root / 'offline' / TASK.format(1) / 'fav' / 'seed0' / 'eval.csv'
    if content is None:
        log.unlink()
        log.mkdir()
    else:
        log.write_bytes(content)
    assert tables.main([str(root), '--out', str(tmp_path / 'out'), '--reps', '20']) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f'error: {log}{words}'), err
    assert not (tmp_path / 'out').exists()


def test_an_evaluation_log_at_the_bounds_0_and_1_is_read_as_0_and_100(tmp_path):
    from launch.results import read_curve

    _run(tmp_path, 'offline', TASK.format(1), 'fav', 0, 100)
    (run,) = load_runs(str(tmp_path))
    Path(run.path, 'eval.csv').write_text('step,phase,success\n1,offline,0\n100,offline,1\n200,offline,1.0\n')
    steps, success = read_curve(run)  # every episode failed, then every one succeeded: both are rates
    assert steps.tolist() == [1, 100, 200] and success.tolist() == [0.0, 100.0, 100.0]


def test_a_failure_midway_leaves_the_output_folder_as_it_was(tmp_path, capsys):
    root = tmp_path / 'runs'
    _run(root, 'offline', TASK.format(1), 'fav', 0, 10)
    _run(root, 'offline', TASK.format(1), 'fql', 0, 20)
    (root / 'offline' / TASK.format(1) / 'fql' / 'seed0' / 'eval.csv').write_text('step,phase\n1,offline\n')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'offline.md').write_text('an earlier table')
    assert tables.main([str(root), '--out', str(out), '--reps', '50']) == 2  # the tables, then the curves fail
    assert 'is not an evaluation log' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out', 'runs']
    assert [p.name for p in out.iterdir()] == ['offline.md'] and (out / 'offline.md').read_text() == 'an earlier table'
    (tmp_path / 'notes.txt').write_text('mine')
    assert tables.main([str(root), '--out', str(tmp_path / 'notes.txt' / 'sub')]) == 2
    assert capsys.readouterr().err.strip().startswith(f'error: --out {tmp_path / "notes.txt" / "sub"}: ')


def test_linked_run_folders_are_read_once_and_a_link_loop_ends(tmp_path):
    _run(tmp_path / 'sweep_a', 'offline', TASK.format(1), 'fav', 0, 10)
    _run(tmp_path / 'sweep_b', 'offline', TASK.format(1), 'fql', 0, 30)
    gathered = tmp_path / 'gathered'
    gathered.mkdir()
    (gathered / 'a').symlink_to(tmp_path / 'sweep_a')
    (gathered / 'b').symlink_to(tmp_path / 'sweep_b')
    (gathered / 'b_again').symlink_to(tmp_path / 'sweep_b')  # the same runs twice: read once
    (gathered / 'loop').symlink_to(gathered)
    runs = load_runs(str(gathered))
    assert sorted((r.agent, r.seed) for r in runs) == [('fav', 0), ('fql', 0)]


def test_curve_legend_counts_the_seeds_that_have_evaluations(tmp_path, monkeypatch):
    from launch import figures

    for seed in (0, 1, 2):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', seed, None)  # unfinished, with evaluations...
    (tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed2' / 'eval.csv').unlink()  # ...but seed 2 has none yet
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.training_curves(ModeResults('offline', load_runs(tmp_path)), TASK.format(1), str(tmp_path / 'c.png'))
    legend = [text.get_text() for text in saved[0].axes[0].get_legend().get_texts()]
    assert legend == ['FAV (2 seeds)']
    (line,) = saved[0].axes[0].get_lines()
    np.testing.assert_allclose(line.get_ydata(), [0, 50, 37.5])  # step 200: seeds at 25 and 50
    # Shaded: ± the std over those seeds (population, as in the tables): 37.5 ± 12.5 at step 200.
    (band,) = saved[0].axes[0].collections
    assert sorted({float(y) for x, y in band.get_paths()[0].vertices if x == 200}) == [25.0, 50.0]


def test_a_curve_averages_each_step_over_the_seeds_that_reached_it(tmp_path, monkeypatch):
    from launch import figures

    for seed in (0, 1):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', seed, None)
    # Seed 0 is still training: its log stops at step 100. Seed 1 reached step 200 at 50 %.
    log = tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed0' / 'eval.csv'
    log.write_text('step,phase,success\n1,offline,0.0\n100,offline,0.5\n')
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.training_curves(ModeResults('offline', load_runs(tmp_path)), TASK.format(1), str(tmp_path / 'c.png'))
    (line,) = saved[0].axes[0].get_lines()
    # Step 200 is seed 1's 50 alone, with no spread: not (0 + 50) / 2 as if seed 0 had scored 0 there.
    np.testing.assert_allclose(line.get_ydata(), [0, 50, 50])
    (band,) = saved[0].axes[0].collections
    assert sorted({float(y) for x, y in band.get_paths()[0].vertices if x == 200}) == [50.0]
    plt_close(saved)


def test_curves_of_runs_with_no_evaluation_yet_warn_nothing(tmp_path, monkeypatch):
    """A sweep's runs just started (config.json, no eval.csv): an empty figure, without a warning on stderr."""
    import warnings

    from launch import figures

    _run(tmp_path, 'offline', TASK.format(1), 'fav', 0, None)
    (tmp_path / 'offline' / TASK.format(1) / 'fav' / 'seed0' / 'eval.csv').unlink()
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # matplotlib's 'No artists with labels found to put in legend'
        figures.training_curves(ModeResults('offline', load_runs(tmp_path)), TASK.format(1), str(tmp_path / 'c.png'))
    assert saved[0].axes[0].get_legend() is None and not saved[0].axes[0].get_lines()


def _error_bars(ax):
    """(low, high) of each bar's error bar, per series with error bars, in drawing order."""
    containers = [c for c in ax.containers if getattr(c, 'errorbar', None) is not None]
    return [[tuple(seg[:, 1]) for seg in c.errorbar.lines[2][0].get_segments()] for c in containers]


def test_summary_bars_draw_the_offline_and_online_scores_side_by_side_over_the_suites_tasks(tmp_path, monkeypatch):
    from launch import figures

    for seed, (score, online) in enumerate([(30, 60), (40, 80)]):
        _run(tmp_path, 'offline', TASK.format(1), 'fav', seed, 10 + 10 * seed)
        _run(tmp_path, 'o2o', SCENE, 'fav', seed, score, online)
        _run(tmp_path, 'o2o', TASK.format(1), 'fav', seed, 90, 100)  # not an O2O suite task: not in the bars
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.summary_bars(results_by_mode(load_runs(str(tmp_path))), str(tmp_path / 's.png'), tables.PUBLISHED)
    offline, o2o = saved[0].axes[:2]
    # (bottom, height): the measured suite average, then the paper's (hatched); O2O: offline 35 and online 70
    # side by side, then the paper's online score.
    assert [(p.get_y(), p.get_height()) for p in offline.patches] == [(0, 15.0), (0, 54)]
    assert [(p.get_y(), p.get_height()) for p in o2o.patches] == [(0, 35.0), (0, 70.0), (0, 69)]
    # Error bars: ± the std over seeds of each score: offline 10, 20 → 15 ± 5; O2O offline 30, 40 → 35 ± 5,
    # online 60, 80 → 70 ± 10. The paper's bars have none.
    assert _error_bars(offline) == [[(10, 20)]]
    assert _error_bars(o2o) == [[(30, 40)], [(60, 80)]]
    plt_close(saved)


def test_summary_bars_draw_an_online_drop_below_the_offline_score(tmp_path, monkeypatch):
    """An online score under the offline one is drawn as it is (a gain stacked on the offline bar was drawn
    downward over it, so a drop from 50 to 40 read as 40 plus a gain of 10)."""
    from launch import figures

    _run(tmp_path, 'o2o', SCENE, 'fav', 0, 50, 40)
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.summary_bars(results_by_mode(load_runs(str(tmp_path))), str(tmp_path / 's.png'))
    (ax,) = saved[0].axes
    assert [(p.get_y(), p.get_height()) for p in ax.patches] == [(0, 50.0), (0, 40.0)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['offline', 'online']
    plt_close(saved)


def test_summary_bars_leave_out_the_offline_bar_of_an_agent_without_an_offline_phase(tmp_path, monkeypatch):
    from launch import figures

    # RLPD has no offline score: no offline bar (not a bar at 0), and its online bar at 50.
    _run(tmp_path, 'o2o', SCENE, 'rlpd', 0, None, 50, offline_steps=0)
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.summary_bars(results_by_mode(load_runs(str(tmp_path))), str(tmp_path / 's.png'))
    offline_bar, online_bar = saved[0].axes[0].patches
    assert np.isnan(offline_bar.get_height()) and online_bar.get_height() == 50.0
    plt_close(saved)


def test_summary_bars_name_under_each_agent_the_tasks_its_average_is_over(tmp_path, monkeypatch):
    """Each bar is an agent's mean over its own tasks with runs: the count is under its name (the title
    counted the tasks any agent ran, so an agent with fewer looked comparable)."""
    from launch import figures

    for task in (1, 2, 3):
        _run(tmp_path, 'offline', TASK.format(task), 'fav', 0, 10 * task)
    _run(tmp_path, 'offline', TASK.format(1), 'fql', 0, 20)
    _run(tmp_path, 'offline', TASK.format(2), 'fql', 0, None)  # unfinished: not among its tasks
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.summary_bars(results_by_mode(load_runs(str(tmp_path))), str(tmp_path / 's.png'))
    (ax,) = saved[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ['FAV\n3 tasks', 'FQL\n1 task']
    assert [p.get_height() for p in ax.patches] == [20.0, 20.0]
    plt_close(saved)


def test_a_config_naming_its_task_by_an_alias_counts_as_that_task(tmp_path):
    """loop.py writes full task names; a hand-written config may name OGBench's default task (task2) by its env
    id or its family: each is read as the task it names (their None sort keys made the tables crash)."""
    root = tmp_path / 'runs'
    _run(root, 'offline', 'cube-single-play-singletask-v0', 'fav', 0, 30)
    _run(root, 'offline', 'cube-single', 'fav', 1, 70)
    _run(root, 'offline', TASK.format(1), 'fav', 0, 50)
    results = ModeResults('offline', load_runs(str(root)))
    assert results.tasks == [TASK.format(1), TASK.format(2)]
    assert results.scores('fav', 'score') == {TASK.format(1): {0: 50}, TASK.format(2): {0: 30, 1: 70}}
    assert tables.main([str(root), '--out', str(tmp_path / 'out'), '--reps', '10']) == 0


def _bounds(ax):
    """(left, right) of each interval bar of a plot, in drawing order."""
    return [(p.get_x(), p.get_x() + p.get_width()) for p in ax.patches]


def test_interval_plot_draws_each_agents_interval_from_its_low_to_its_high(tmp_path, monkeypatch):
    from launch import figures
    from launch.aggregates import Aggregates

    estimates = {'fav': {'IQM': (20, 10, 30), 'Mean': (25, 15, 35)}, 'fql': {'IQM': (5, 1, 9), 'Mean': (6, 2, 8)}}
    found = Aggregates('offline', ['t'], {'fav': 4, 'fql': 3}, estimates, {'fql': (0.6, 0.4, 0.8)}, 'fav')
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.interval_plot(found, str(tmp_path / 'i.png'))
    iqm, mean = saved[0].axes
    assert (iqm.get_title(), mean.get_title()) == ('IQM', 'Mean')
    assert [t.get_text() for t in iqm.get_yticklabels()] == ['FAV', 'FQL']
    assert _bounds(iqm) == [(10, 30), (1, 9)] and _bounds(mean) == [(15, 35), (2, 8)]
    # The point estimates: a tick across each bar.
    points = [float(np.unique(c.get_segments()[0][:, 0])[0]) for c in iqm.collections]
    assert points == [20, 5]
    plt_close(saved)


def test_improvement_plot_draws_each_pairs_interval_from_its_low_to_its_high(tmp_path, monkeypatch):
    from launch import figures
    from launch.aggregates import Aggregates

    estimates = {a: {'IQM': (1, 1, 1), 'Mean': (1, 1, 1)} for a in ('fav', 'fql', 'iql')}
    improvement = {'fql': (0.6, 0.4, 0.8), 'iql': (0.3, 0.25, 0.45)}
    found = Aggregates('offline', ['t'], {'fav': 4, 'fql': 3, 'iql': 3}, estimates, improvement, 'fav')
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    figures.improvement_plot(found, str(tmp_path / 'p.png'))
    ax, twin = saved[0].axes
    np.testing.assert_allclose(_bounds(ax), [(0.4, 0.8), (0.25, 0.45)])
    assert [float(c.get_segments()[0][0, 0]) for c in ax.collections] == [0.6, 0.3]
    assert [t.get_text() for t in ax.get_yticklabels()] == ['FAV', 'FAV']
    assert [t.get_text() for t in twin.get_yticklabels()] == ['FQL', 'IQL']
    plt_close(saved)


def test_summary_bars_draw_the_published_numbers_beside_the_measured_ones(tmp_path, monkeypatch):
    from launch import figures

    _run(tmp_path, 'offline', TASK.format(1), 'fav', 0, 10)
    _run(tmp_path, 'offline', TASK.format(1), 'fql', 0, 20)
    saved = []
    monkeypatch.setattr(figures, '_save', lambda fig, path: saved.append(fig) or path)
    by_mode = results_by_mode(load_runs(str(tmp_path)))
    figures.summary_bars(by_mode, str(tmp_path / 's.png'), tables.PUBLISHED)
    figures.summary_bars(by_mode, str(tmp_path / 's.png'))
    (published,), (alone,) = saved[0].axes, saved[1].axes
    # Measured bars (width 0.4) just left of the ticks at 0, 1, the paper's just right of them.
    bars = [(p.get_x(), p.get_width()) for p in published.patches]
    np.testing.assert_allclose(bars, [(-0.4, 0.4), (0.6, 0.4), (0.0, 0.4), (1.0, 0.4)], atol=1e-12)
    np.testing.assert_allclose(published.get_xticks(), [0, 1])
    np.testing.assert_allclose([(p.get_x(), p.get_width()) for p in alone.patches], [(-0.35, 0.7), (0.65, 0.7)])
    np.testing.assert_allclose(alone.get_xticks(), [0, 1])
    plt_close(saved)


def test_the_published_numbers_reach_the_summary_figure_only_when_asked(runs, tmp_path, monkeypatch):
    from launch import figures

    asked, summary_bars = [], figures.summary_bars
    monkeypatch.setattr(
        figures,
        'summary_bars',
        lambda by_mode, path, published=None: summary_bars(by_mode, path, asked.append(published) or published),
    )
    for flags in ([], ['--published']):
        assert tables.main([str(runs), '--out', str(tmp_path / f'out{len(flags)}'), '--reps', '10', *flags]) == 0
    assert asked == [None, tables.PUBLISHED]


def plt_close(figs):
    import matplotlib.pyplot as plt

    for fig in figs:
        plt.close(fig)
