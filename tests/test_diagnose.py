"""FAV's real update on the one-state Gaussian bandit against its closed-form target, and the diagnose CLI.

Behavior N(-0.3, 0.2²), Q = -(a - 0.5)², reference = the dataset action, softmax prior. Averaged over the
batch, the update's KDE score is 2(E[y] - x)/σ, the score of N(-0.3, σ/2); tilted by exp(βQ) its target is
Gaussian with precision 2/σ + 2β and mean (2μ0/σ + 2βc)/(2/σ + 2β). β folds into the fixed Q.
"""

import dataclasses
import functools
import os
import signal
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from launch import bandits, diagnose
from tests.agent_helpers import trained_offline_chunk

BEHAVIOR_MEAN, Q_OPTIMUM = -0.3, 0.5
# Small networks, M = 32 samples per state: with M = 8 SVGD's finite-particle shrinkage alone puts the
# std 25-30 % low (see docs/diagnostics.md); at M = 32 it is 10-12 % low.
PLAN = dataclasses.replace(diagnose.QUICK, steps=800, hidden_dims=(32, 32), batch_size=32)


def _exact(sigma, beta):
    precision = 2 / sigma + 2 * beta
    return (2 * BEHAVIOR_MEAN / sigma + 2 * beta * Q_OPTIMUM) / precision, precision**-0.5


def _train(sigma, betas, **changes):
    setting = diagnose.Setting('gauss1d', sigma, 'softmax', num_samples=32, **changes)
    with mock.patch.object(diagnose, 'offline_chunk', trained_offline_chunk):  # the same program, compiled to run fast
        samples, info, finite = diagnose.train(setting, PLAN, betas)
    assert finite
    return samples[..., 0], info


@pytest.mark.parametrize('sigma, beta', [(0.1, 8.0), (0.5, 2.0)])
def test_gaussian_bandit_reaches_the_exact_target(sigma, beta):
    samples, info = _train(sigma, (0.0, beta))
    for b, beta_b in enumerate((0.0, beta)):
        mean, std = _exact(sigma, beta_b)
        # Tolerances: mean within 0.03; std between 0.8 and 1.02 of the exact one (finite-M shrinkage).
        assert abs(samples[b].mean() - mean) < 0.03, (sigma, beta_b, samples[b].mean(), mean)
        assert 0.8 * std < samples[b].std() < 1.02 * std, (sigma, beta_b, samples[b].std(), std)
    # β = 0 gives the prior the update sees: the kernel N(μ0, σ/2) at the behavior mean (not the wider
    # N(μ0, 0.2² + σ/2) that a KDE over the whole dataset would give).
    assert samples[0].std() < 0.95 * np.sqrt(0.2**2 + sigma / 2)
    # The bandits module's grid target (used by the CLI) agrees with the closed form.
    log_prior = bandits.fixed_point_log_prior(bandits.PROBLEMS['gauss1d'], sigma, 'softmax', 1)
    grid_mean = bandits.target_mean(bandits.PROBLEMS['gauss1d'], sigma, beta, log_prior)[0]
    assert abs(grid_mean - _exact(sigma, beta)[0]) < 0.01
    # The update's residual is measured on the same batch before and after the step.
    assert np.all(info['residual_after'] > 0) and np.all(info['residual_before'] > 0)


@pytest.mark.parametrize('sigma', [0.05, 0.3])
def test_the_fixed_point_log_prior_of_one_softmax_particle_is_the_gaussian_about_the_particles_mean(sigma):
    """With one softmax reference particle the averaged score is 2(E[y] - x)/σ, linear in x, so the grid integral
    (trapezoids) must give -(x - E[y])²/σ exactly, up to a constant (here within 1e-6); a right Riemann sum is off
    by up to 2·dx/σ at the grid's end (7e-3 at σ = 0.3, dx = 1e-3)."""
    problem = bandits.PROBLEMS['gauss1d']
    log_prior = bandits.fixed_point_log_prior(problem, sigma, 'softmax', 1, num_sets=512, seed=3)
    mean = problem.sample_behavior(np.random.default_rng(3), 512).mean()  # the same draws as the function's
    x = bandits.factor_grid(problem)[0][:, 0]
    exact = -((x - mean) ** 2) / sigma
    np.testing.assert_allclose(log_prior - log_prior[0], exact - exact[0], atol=1e-4)


def test_without_the_repulsive_term_the_samples_collapse():
    samples, _ = _train(0.1, (0.0,), repulsive=False)
    # With repulsion the spread is 0.8-1.0 of the target's (above); without it, below a quarter.
    assert samples[0].std() < 0.25 * _exact(0.1, 0.0)[1], samples[0].std()


@pytest.mark.slow
def test_cli_quick_writes_the_table_and_figures(tmp_path):
    out = tmp_path / 'diag'
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, 'launch/diagnose.py', '--quick', '--out', str(out)], cwd=root, check=True)
    table = (out / 'results.md').read_text()
    assert '| gauss1d | softmax | dataset | 0.1 | 4 |' in table and '| gauss1d | clipped |' in table
    assert 'nan' not in table and ' — |' in table  # 1-D rows have no energy distance: a dash, not 'nan'
    assert '## Ablations' not in table  # --quick runs none: no empty table
    for name in ('density_gauss1d.png', 'distance_gauss1d.png'):
        data = (out / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 5000, name


def test_cli_refuses_an_out_through_a_file_before_training(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, 'launch/diagnose.py', '--quick', '--out', str(tmp_path / 'notes.txt' / 'diag')]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ''
    assert result.stderr.strip().splitlines() == [
        f'error: --out {tmp_path / "notes.txt" / "diag"}: {tmp_path / "notes.txt"} is a file; pass a folder '
        '(see launch/diagnose.py --help)'
    ]
    assert (tmp_path / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('name', ['results.md', 'distance_gauss1d.png'])
def test_cli_refuses_a_folder_where_an_output_goes_before_training(name, tmp_path):
    out = tmp_path / 'diag'
    (out / name).mkdir(parents=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, 'launch/diagnose.py', '--quick', '--out', str(out)]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ''  # no training: it printed each setting trained
    assert result.stderr.strip().splitlines() == [
        f'error: --out {out}: {out / name} is a folder, where a file goes; pass another --out '
        '(see launch/diagnose.py --help)'
    ]
    assert [p.name for p in out.iterdir()] == [name]  # no figure written beside it


@pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs /proc: a folder no one can write in, root included')
@pytest.mark.parametrize(
    'out, words', [('/proc/fav_diagnose', '--out /proc/fav_diagnose: cannot write in /proc ('), ('', '--out is empty')]
)
def test_cli_refuses_an_out_it_cannot_write_before_training(out, words):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, 'launch/diagnose.py', '--quick', '--out', out]  # '' was refused after the training
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ''
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f'error: {words}'), result.stderr


def test_distances_of_the_diagnostics_against_independent_formulas():
    from scipy.stats import energy_distance

    rng = np.random.default_rng(0)
    x, y = rng.normal(0.0, 0.3, (300, 1)), rng.normal(0.2, 0.3, (200, 1))
    mmd, energy = bandits.mmd_and_energy(x, y)

    def mean_kernel(a, b):
        return np.exp(-((a[:, None, 0] - b[None, :, 0]) ** 2) / (2 * bandits.MMD_LENGTHSCALE**2)).mean()

    assert mmd == pytest.approx(np.sqrt(mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)), rel=1e-4)
    # scipy's 1-D energy distance is the square root of 2E|X - Y| - E|X - X'| - E|Y - Y'|.
    assert energy == pytest.approx(energy_distance(x[:, 0], y[:, 0]) ** 2, abs=1e-4)
    assert bandits.mmd_and_energy(x, x)[0] < 1e-3

    # Mode coverage on mix1d (modes at -0.6, 0, 0.6): samples put 1/2, 1/2, 0 in the cells, the
    # reference 1/4, 1/4, 1/2 → Σ min = 1/4 + 1/4 + 0.
    problem = bandits.PROBLEMS['mix1d']
    samples = np.array([[-0.7], [-0.5], [0.1], [-0.1]])
    reference = np.array([[-0.6], [0.05], [0.5], [0.7]])
    assert bandits.mode_coverage(problem, samples, reference) == pytest.approx(0.5)
    assert bandits.mode_coverage(problem, reference, reference) == pytest.approx(1.0)


@pytest.mark.parametrize('beta', [0.0, 2.0, 8.0])
def test_the_unsmoothed_target_is_the_behavior_tilted_by_exp_beta_q(beta):
    # gauss1d: behavior N(-0.3, 0.2²), Q = -(a - 0.5)²: p_b·exp(βQ) is Gaussian with precision 1/0.2² + 2β and
    # mean (-0.3/0.2² + 2β·0.5) / that precision (the [-1, 1] box cuts 3.5 stds out at β = 0): the reference of
    # the "to p_b·exp(βQ)" column (σ = 0: no smoothing).
    problem = bandits.PROBLEMS['gauss1d']
    precision = 1 / 0.2**2 + 2 * beta
    assert bandits.target_mean(problem, 0.0, beta)[0] == pytest.approx((-0.3 / 0.2**2 + beta) / precision, abs=1e-3)
    assert bandits.target_std(problem, 0.0, beta) == pytest.approx(precision**-0.5, rel=2e-3)
    exact = np.random.default_rng(0).normal((-0.3 / 0.2**2 + beta) / precision, precision**-0.5, (20_000, 1))
    assert bandits.wasserstein_1d(problem, exact, 0.0, beta) < 0.01
    assert bandits.wasserstein_1d(problem, exact, 0.5, beta) > 0.05  # the smoothed target is another one


@pytest.mark.parametrize('name', ['gauss1d', 'mix2d', 'prod5d'])
def test_the_targets_exact_std_agrees_with_its_samples(name):
    problem = bandits.PROBLEMS[name]
    samples = bandits.target_samples(problem, 0.1, 1.0, 20_000, np.random.default_rng(0))
    assert bandits.target_std(problem, 0.1, 1.0) == pytest.approx(np.linalg.norm(samples.std(0)), rel=0.02)


@pytest.mark.parametrize('sigma', [0.05, 0.1])
def test_the_smoothed_target_adds_half_of_sigma_to_the_behaviors_variance(sigma):
    # gauss1d smoothed by the kernel exp(-(x-y)²/σ): prior N(-0.3, 0.2² + σ/2); tilted by exp(8Q), Gaussian with
    # precision 1/(0.2² + σ/2) + 16 and mean (-0.3/(0.2² + σ/2) + 8) / that precision (far inside the box).
    problem, beta, var = bandits.PROBLEMS['gauss1d'], 8.0, 0.2**2 + sigma / 2
    precision = 1 / var + 2 * beta
    assert bandits.target_mean(problem, sigma, beta)[0] == pytest.approx((-0.3 / var + beta) / precision, abs=1e-3)
    assert bandits.target_std(problem, sigma, beta) == pytest.approx(precision**-0.5, rel=2e-3)


def test_behavior_samples_and_target_keep_the_mixture_weights_and_std():
    # mix1d: modes -0.6, 0, 0.6 of weights 0.3, 0.4, 0.3 and std 0.1 (6 stds apart): the mass of each mode's
    # cell (nearest mode) is its weight, in the behavior's samples and in the β = 0, σ = 0 target.
    problem = bandits.PROBLEMS['mix1d']
    samples = problem.sample_behavior(np.random.default_rng(0), 20_000)
    cells = np.digitize(samples[:, 0], [-0.3, 0.3])
    np.testing.assert_allclose(np.bincount(cells) / len(samples), [0.3, 0.4, 0.3], atol=0.015)
    points, probs = bandits.factor_target(problem, 0.0, 0.0)
    target_cells = np.digitize(points[:, 0], [-0.3, 0.3])
    np.testing.assert_allclose(np.bincount(target_cells, weights=probs), [0.3, 0.4, 0.3], atol=2e-3)
    gauss = bandits.PROBLEMS['gauss1d'].sample_behavior(np.random.default_rng(0), 20_000)
    assert abs(gauss.mean() + 0.3) < 0.01 and abs(gauss.std() - 0.2) < 0.01


def test_product_problem_sums_q_and_repeats_the_factors_mean():
    problem = bandits.PROBLEMS['prod5d']  # Q = Σ 0.5·a_i over 5 independent copies of a two-mode factor
    action = np.array([[0.2, -0.4, 1.0, 0.0, 0.6]], np.float32)
    assert float(problem.q_total(action)[0]) == pytest.approx(0.5 * 1.4)
    # Factor at σ = 0: modes ±0.5 of std 0.15, tilted by exp(0.5βa): each mode moves by 0.5β·0.15² and their
    # weights go as exp(±0.25β), so the mean is 0.5·tanh(0.25β) + 0.5β·0.15² (β = 2: 0.2536), in every dimension.
    expected = 0.5 * np.tanh(0.5) + 0.15**2
    np.testing.assert_allclose(bandits.target_mean(problem, 0.0, 2.0), [expected] * 5, atol=2e-3)


@pytest.mark.parametrize('name', ['gauss1d', 'mix2d'])
def test_target_samples_are_jittered_uniformly_within_their_grid_cell(name):
    # A prior with all its mass on one grid point: every draw lies in that point's cell, spread over all of it.
    problem = bandits.PROBLEMS[name]
    points, cell = bandits.factor_grid(problem)
    spacing = points[1, -1] - points[0, -1]
    assert cell == pytest.approx(spacing ** points.shape[1])
    k = len(points) // 2  # the box's center: len // 3 is on its edge in 2-D, where the clip cuts half the cell
    log_prior = np.where(np.arange(len(points)) == k, 0.0, -1e9)
    draws = bandits.target_samples(problem, 0.1, 2.0, 2000, np.random.default_rng(0), log_prior)
    offsets = np.abs(draws - points[k])
    assert offsets.max() <= spacing / 2 and offsets.max() > 0.95 * spacing / 2
    # Both ways along every axis, as often one way as the other.
    signed = draws - points[k]
    assert np.all(signed.min(0) < -0.95 * spacing / 2) and np.all(signed.max(0) > 0.95 * spacing / 2)
    assert np.all(np.abs((signed > 0).mean(0) - 0.5) < 0.05)
    if points.shape[1] > 1:  # each axis on its own, not one offset along the cell's diagonal
        assert abs(np.corrcoef(signed.T)[0, 1]) < 0.1


def test_evaluate_rows_against_their_closed_forms():
    problem, beta = bandits.PROBLEMS['gauss1d'], 4.0
    samples = np.random.default_rng(0).normal(0.0, 0.2, (2000, 1))
    row = diagnose.evaluate(diagnose.Setting('gauss1d', 0.1, 'softmax'), beta, samples, np.random.default_rng(0))
    var = 0.2**2 + 0.1 / 2
    assert row['target_std'] == pytest.approx((1 / var + 2 * beta) ** -0.5, rel=2e-3)
    assert row['tilted'] == bandits.wasserstein_1d(problem, samples, 0.0, beta)  # σ = 0: no smoothing
    # One dataset action per reference set: the fixed point is the closed form of the module docstring.
    assert abs(row['fixed_point_mean'][0] - _exact(0.1, beta)[0]) < 0.01

    # mix1d, samples all in the -0.6 mode: coverage is the target's mass in that mode's cell.
    problem = bandits.PROBLEMS['mix1d']
    samples = np.full((500, 1), -0.6)
    row = diagnose.evaluate(diagnose.Setting('mix1d', 0.1), 2.0, samples, np.random.default_rng(0))
    points, probs = bandits.factor_target(problem, 0.1, 2.0)
    assert row['coverage'] == pytest.approx(probs[points[:, 0] < -0.3].sum(), abs=0.02)
    assert row['coverage'] < 0.5

    # mix2d: the actor's std is the norm of its per-dimension stds (here 0.1 and 0.3), as the table says.
    samples = np.random.default_rng(1).normal(0.0, (0.1, 0.3), (4000, 2))
    row = diagnose.evaluate(diagnose.Setting('mix2d', 0.1), 1.0, samples, np.random.default_rng(0))
    assert row['actor_std'] == pytest.approx(np.hypot(0.1, 0.3), rel=2e-2)


def test_run_plan_rows_and_table_take_each_betas_own_values(monkeypatch):
    plan = diagnose.QUICK  # gauss1d, σ = 0.1, β = 0 and 4, softmax and clipped priors
    rng = np.random.default_rng(0)
    samples = rng.normal(-0.2, 0.2, (len(plan.betas), 1000, 1))
    info = dict(phi_norm=np.array([0.125, 0.5]), kernel_offdiag_mean=np.array([0.25, 0.75]))
    monkeypatch.setattr(diagnose, 'train', lambda setting, plan, betas: (samples, info, True))
    rows, _ = diagnose.run_plan(plan, log=lambda line: None)
    assert [(r['setting'].prior_score, r['beta']) for r in rows] == [
        ('softmax', 0.0), ('softmax', 4.0), ('clipped', 0.0), ('clipped', 4.0)
    ]  # fmt: skip
    assert [(r['residual'], r['kernel']) for r in rows] == [(0.125, 0.25), (0.5, 0.75)] * 2
    table = diagnose.markdown_tables(rows, plan, 1.0)
    r = rows[1]
    # Columns: distance (W1), to p_b·exp(βQ), fixed-point W1, energy (a dash in 1-D), target mean, actor mean.
    assert (
        f'| W1 {r["w1"]:.3f} | {r["tilted"]:.3f} | {r["w1_fixed_point"]:.3f} | — | {r["target_mean"][0]:+.3f} | '
        f'{r["actor_mean"][0]:+.3f} | {r["target_std"]:.3f} / {r["actor_std"]:.3f} | 1.00 | 0.500 | 0.75 |'
    ) in table


@pytest.mark.parametrize('steps', [805, 5, 0])
def test_a_plan_refuses_steps_that_do_not_fill_its_chunks(steps):
    # train runs steps // CHUNKS updates per chunk: 805 steps would silently train 800.
    with pytest.raises(ValueError, match=f'^Plan steps={steps}: .* positive multiple of {diagnose.CHUNKS} '):
        dataclasses.replace(diagnose.QUICK, steps=steps)
    assert dataclasses.replace(diagnose.QUICK, steps=3 * diagnose.CHUNKS).steps == 3 * diagnose.CHUNKS


def test_train_gives_every_beta_the_same_batches_and_runs_the_chunks_back_to_back(monkeypatch):
    calls = []

    def chunk(agents, buffer, data_keys, start, length, batch_size):
        calls.append((np.asarray(data_keys), start, length, batch_size))
        return agents, dict(phi_norm=np.zeros(3)), np.ones(3, bool)

    monkeypatch.setattr(diagnose, 'offline_chunk', chunk)
    plan = dataclasses.replace(diagnose.QUICK, steps=3 * diagnose.CHUNKS, hidden_dims=(8,), batch_size=16)
    samples, _, finite = diagnose.train(diagnose.Setting('gauss1d', 0.1), plan, (0.0, 1.0, 4.0))
    assert samples.shape == (3, diagnose.NUM_EVAL_SAMPLES, 1) and finite
    # Update i of every run draws its batch with fold_in(its data key, start + i): one key for all β (the
    # same batches), and chunk k starts where chunk k - 1 ended.
    assert [(start, length, size) for _, start, length, size in calls] == [
        (3 * k, 3, 16) for k in range(diagnose.CHUNKS)
    ]
    for data_keys, *_ in calls:
        assert len(data_keys) == 3 and (data_keys == data_keys[0]).all()


@functools.cache
def _mix1d_fixed_point_priors(sigma):
    problem = bandits.PROBLEMS['mix1d']
    counts = (1, diagnose.FAVConfig.num_reference)
    return {
        (form, k): bandits.fixed_point_log_prior(problem, sigma, form, k) for form in diagnose.PRIORS for k in counts
    }


@pytest.mark.parametrize('prior', ['softmax', 'clipped'])
@pytest.mark.parametrize('reference', ['dataset', 'bc_flow'])
def test_evaluate_compares_with_the_fixed_point_of_the_settings_prior_and_reference_count(prior, reference):
    problem, sigma, beta = bandits.PROBLEMS['mix1d'], 0.1, 2.0
    samples = problem.sample_behavior(np.random.default_rng(3), 2000).astype(np.float64)
    setting = diagnose.Setting('mix1d', sigma, prior, reference)
    row = diagnose.evaluate(setting, beta, samples, np.random.default_rng(0))
    # One reference set per state: the dataset action (1), or K BC samples.
    count = 1 if reference == 'dataset' else diagnose.FAVConfig.num_reference
    priors = _mix1d_fixed_point_priors(sigma)
    distances = {key: bandits.wasserstein_1d(problem, samples, sigma, beta, p) for key, p in priors.items()}
    # The prior's form matters with one reference (with K they nearly agree), and so does the count.
    k = diagnose.FAVConfig.num_reference
    assert abs(distances['softmax', 1] - distances['clipped', 1]) > 2e-3
    assert abs(distances[prior, 1] - distances[prior, k]) > 2e-2
    assert row['w1_fixed_point'] == pytest.approx(distances[prior, count], rel=1e-9)
    expected_mean = bandits.target_mean(problem, sigma, beta, priors[prior, count])
    np.testing.assert_allclose(row['fixed_point_mean'], expected_mean, rtol=1e-9)
    if (prior, reference) == ('softmax', 'dataset'):
        # One softmax particle: score 2(E[y] - x)/σ with E[y] = 0 here, a prior ∝ exp(-x²/σ), tilted by exp(βQ).
        points = np.linspace(-1, 1, bandits.GRID_1D)
        weights = np.exp(-(points**2) / sigma + beta * np.asarray(problem.q(points[:, None])))
        assert row['fixed_point_mean'][0] == pytest.approx(weights @ points / weights.sum(), abs=0.01)


@pytest.mark.parametrize('name', ['mix2d', 'prod5d'])
def test_evaluate_measures_the_tilted_column_against_the_unsmoothed_target_past_1d(name):
    # Samples of the behavior tilted by exp(βQ) itself (σ = 0): close to it, far from the target smoothed
    # by σ = 0.5 (each component's variance grows by 0.25).
    problem, sigma, beta = bandits.PROBLEMS[name], 0.5, 2.0
    samples = bandits.target_samples(problem, 0.0, beta, 2000, np.random.default_rng(5))
    row = diagnose.evaluate(diagnose.Setting(name, sigma), beta, samples, np.random.default_rng(0))
    assert row['tilted'] < row['mmd'] / 3, (row['tilted'], row['mmd'])
    # The MMD (not the energy distance), against samples of its own generator.
    tilted = bandits.target_samples(problem, 0.0, beta, diagnose.NUM_EVAL_SAMPLES, np.random.default_rng(1))
    assert row['tilted'] == pytest.approx(bandits.mmd_and_energy(samples, tilted)[0], rel=1e-5)


def test_bump_rewards_sum_each_bumps_height_over_its_squared_distance():
    # Q(a) = Σ_c h_c exp(-‖a - c‖²/w), independently in numpy: mix1d (w = 0.08), mix2d (w = 0.15).
    rng = np.random.default_rng(0)
    for name, centers, width, heights in [
        ('mix1d', [[-0.6], [0.6]], 0.08, [1.0, 1.5]),
        ('mix2d', [[-0.5, -0.5], [0.5, 0.5]], 0.15, [1.0, 1.5]),
    ]:
        centers = np.array(centers)
        points = np.concatenate([centers, centers + 0.1, rng.uniform(-1, 1, (20, centers.shape[1]))])
        sq = ((points[:, None, :] - centers) ** 2).sum(-1)
        expected = (np.array(heights) * np.exp(-sq / width)).sum(-1)
        q = np.asarray(bandits.PROBLEMS[name].q(points.astype(np.float32)))
        np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-6)


def _saved_figures(monkeypatch):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    saved = {}
    monkeypatch.setattr(diagnose, '_save', lambda fig, out, name, plt: saved.setdefault(name, fig) and name)
    return saved, plt


def test_density_figure_puts_each_prior_and_beta_in_its_own_panel(monkeypatch):
    saved, plt = _saved_figures(monkeypatch)
    plan = dataclasses.replace(diagnose.QUICK, problems=('mix1d',), betas=(0.0, 4.0))
    problem, sigma = bandits.PROBLEMS['mix1d'], plan.focus_sigma
    rng = np.random.default_rng(0)
    samples = {  # every panel its own samples
        diagnose.Setting('mix1d', sigma, prior): rng.normal(center, 0.2, (2, 3000, 1))
        + np.array([-0.3, 0.3])[:, None, None]
        for prior, center in (('softmax', -0.2), ('clipped', 0.2))
    }
    diagnose.figures([], samples, plan, '/nonexistent', plt)
    axes = np.array(saved['density_mix1d.png'].axes).reshape(2, 2)
    for row_i, prior in enumerate(('softmax', 'clipped')):
        for b, beta in enumerate(plan.betas):
            ax = axes[row_i, b]
            assert ax.get_title() == f'{prior}, β={beta:g}'
            drawn = samples[diagnose.Setting('mix1d', sigma, prior)][b, :, 0]
            heights, _ = np.histogram(drawn, bins=80, range=(-1, 1), density=True)
            np.testing.assert_allclose([p.get_height() for p in ax.patches], heights)
            lines = {line.get_label(): line for line in ax.get_lines()}
            x = lines['target'].get_xdata()
            dx = x[1] - x[0]
            # Densities (integrating to 1): the nominal target, and the fixed point of this row's prior.
            _, probs = bandits.factor_target(problem, sigma, beta)
            np.testing.assert_allclose(lines['target'].get_ydata(), probs / dx)
            log_prior = bandits.fixed_point_log_prior(problem, sigma, prior, 1)
            _, fixed = bandits.factor_target(problem, sigma, beta, log_prior)
            np.testing.assert_allclose(lines['fixed point'].get_ydata(), fixed / dx)
            assert lines['fixed point'].get_ydata().sum() * dx == pytest.approx(1.0)
    plt.close('all')


def test_distance_figure_draws_each_sigma_and_prior_against_beta(monkeypatch):
    saved, plt = _saved_figures(monkeypatch)
    plan = dataclasses.replace(diagnose.QUICK, problems=('mix1d', 'mix2d'), sigmas=(0.1, 0.5), betas=(0.0, 4.0))
    rng = np.random.default_rng(0)
    samples = {
        diagnose.Setting(name, plan.focus_sigma, prior): rng.uniform(-1, 1, (2, 500, bandits.PROBLEMS[name].dim))
        for name in plan.problems
        for prior in diagnose.PRIORS
    }
    settings = [diagnose.Setting(n, s, prior) for n in plan.problems for s in plan.sigmas for prior in diagnose.PRIORS]
    settings += [diagnose.Setting(n, 0.1, 'clipped', 'bc_flow') for n in plan.problems]  # not in the figure
    rows = []
    for setting in settings:
        for beta in plan.betas:
            key = 'w1' if setting.problem == 'mix1d' else 'mmd'
            rows.append({'setting': setting, 'beta': beta, key: rng.uniform(), 'tilted': rng.uniform() + 1})
    diagnose.figures(rows, samples, plan, '/nonexistent', plt)
    for name, label in (('mix1d', 'W1 to target'), ('mix2d', 'MMD to target')):
        (ax,) = saved[f'distance_{name}.png'].axes
        assert ax.get_ylabel() == label
        drawn = [
            (line.get_label(), line.get_linestyle(), list(line.get_xdata()), list(line.get_ydata()))
            for line in ax.get_lines()
        ]
        expected = []
        for sigma in plan.sigmas:
            for prior, style in (('softmax', '--'), ('clipped', '-')):
                picked = [r for r in rows if r['setting'] == diagnose.Setting(name, sigma, prior)]
                values = [r['w1' if name == 'mix1d' else 'mmd'] for r in picked]
                expected.append((f'σ={sigma:g} {prior}', style, list(plan.betas), values))
        assert drawn == expected
    plt.close('all')


@pytest.mark.parametrize('name', ['mix2d', 'prod5d'])
def test_density_panels_past_1d_show_the_samples_against_the_target(name, monkeypatch):
    _, plt = _saved_figures(monkeypatch)
    problem, sigma, beta = bandits.PROBLEMS[name], 0.1, 2.0
    if name == 'mix2d':  # Q rewarding one off-diagonal corner: a target that is not symmetric in x and y
        problem = dataclasses.replace(problem, q=bandits._bumps([[-0.5, 0.5]], 0.15, [1.5]))
    samples = np.random.default_rng(0).uniform(-1, 1, (1500, problem.dim)) * np.linspace(0.5, 1, problem.dim)
    fig, ax = plt.subplots()
    diagnose._density_panel(ax, problem, sigma, beta, 'clipped', samples)
    if name == 'mix2d':
        # The target's contours on the grid's axes (the highest circles the rewarded corner), then the first 1000
        # samples, x against y.
        contour, scatter = ax.collections
        top = [path.vertices for path in contour.get_paths() if len(path.vertices)][-1]
        np.testing.assert_allclose(top.mean(0), [-0.5, 0.5], atol=0.02)
        np.testing.assert_allclose(scatter.get_offsets(), samples[:1000])
        assert ax.get_xlim() == (-1, 1) and ax.get_ylim() == (-1, 1)
    else:
        # The first coordinate's marginal: its histogram and the factor's target density (integrating to 1).
        points, probs = bandits.factor_target(problem, sigma, beta)
        heights, _ = np.histogram(samples[:, 0], bins=80, range=(-1, 1), density=True)
        np.testing.assert_allclose([p.get_height() for p in ax.patches], heights)
        (line,) = ax.get_lines()
        dx = points[1, 0] - points[0, 0]
        np.testing.assert_allclose(line.get_ydata(), probs / dx)
        assert line.get_ydata().sum() * dx == pytest.approx(1.0)
    plt.close(fig)


@pytest.mark.parametrize('method', ['create', 'sample_actions'])
def test_a_ctrl_c_while_train_compiles_its_agents_or_samples_waits_for_the_compile(method, monkeypatch):
    """XLA compiles in a thread of its own, and a Ctrl-C that ended the wait for a compile crashed the process
    (SIGSEGV) instead of stopping it: the setup and the final sampling hold SIGINT until they return."""
    went_on = []
    original = getattr(diagnose.FAVAgent, method)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        went_on.append(method)  # not reached had the signal been raised here, mid-trace
        return original(*args, **kwargs)

    def chunk(agents, buffer, data_keys, start, length, batch_size):
        return agents, {}, np.ones(len(data_keys), bool)

    monkeypatch.setattr(diagnose, 'offline_chunk', chunk)
    if method == 'create':
        monkeypatch.setattr(diagnose.FAVAgent, method, classmethod(lambda cls, *args, **kwargs: interrupted(*args)))
    else:
        monkeypatch.setattr(diagnose.FAVAgent, method, interrupted)
    plan = dataclasses.replace(diagnose.QUICK, steps=diagnose.CHUNKS, hidden_dims=(8,), batch_size=16)
    with pytest.raises(KeyboardInterrupt):
        diagnose.train(diagnose.Setting('gauss1d', 0.1), plan, (0.0, 1.0))
    assert went_on


def test_a_ctrl_c_while_the_sample_distances_compile_waits_for_the_compile(monkeypatch):
    went_on = []

    class Interrupting(float):
        def __pow__(self, power):  # read while the distances' program traces
            os.kill(os.getpid(), signal.SIGINT)
            went_on.append(True)  # not reached had the signal been raised here, mid-trace
            return float(self) ** power

    monkeypatch.setattr(bandits, 'MMD_LENGTHSCALE', Interrupting(bandits.MMD_LENGTHSCALE))
    x = np.zeros((5, 7), np.float32)  # a shape no other test uses: the program traces anew
    with pytest.raises(KeyboardInterrupt):
        bandits.mmd_and_energy(x, x)
    assert went_on
