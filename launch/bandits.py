"""One-state bandits with a known answer for launch/diagnose.py: behavior, fixed Q, exact targets, distances.

A problem is a Gaussian-mixture behavior p_b (isotropic components) and a fixed Q(a) on actions in [-1, 1]^d.
FAV's nominal target is π*(a) ∝ p̂_ref(a)·exp(βQ(a)), with p̂_ref the KDE of the behavior: p_b smoothed by the
kernel exp(-||x-y||²/σ), a Gaussian of variance σ/2 per dimension, so each component's variance grows by σ/2.
Targets live on the action box [-1, 1]^d (the actor's samples are clipped to it).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import wasserstein_distance

from agents.fav import kde_score
from launch.compiled import signals_held

GRID_1D = 2001  # points of the 1-D target grid on [-1, 1]
GRID_2D = 201  # points per axis of the 2-D target grid
MMD_LENGTHSCALE = 0.2  # MMD kernel exp(-||x-y||² / (2·0.2²))


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    means: tuple  # behavior component means, (C, d)
    weights: tuple  # behavior component weights, (C,)
    std: float  # behavior component std (isotropic)
    q: Callable  # Q(actions (..., d)) -> (...), jnp
    repeat: int = 1  # > 1: the action is `repeat` independent copies of this problem (Q summed): a product target

    @property
    def dim(self):
        return len(self.means[0]) * self.repeat

    def sample_behavior(self, rng, n):
        means = np.asarray(self.means)
        comps = rng.choice(len(self.weights), size=(n, self.repeat), p=np.asarray(self.weights))
        factors = means[comps] + self.std * rng.normal(size=comps.shape + (means.shape[1],))
        return np.clip(factors.reshape(n, -1), -1, 1).astype(np.float32)

    def q_total(self, actions):
        """Q of a full action: the sum of the factor's Q over the `repeat` copies."""
        factor_dim = len(self.means[0])
        parts = actions.reshape(actions.shape[:-1] + (self.repeat, factor_dim))
        return self.q(parts).sum(-1)

    def mode_anchors(self):
        """Behavior component means (all combinations for a product problem): mode regions are their cells."""
        means = np.asarray(self.means)
        grids = np.meshgrid(*[np.arange(len(means))] * self.repeat, indexing='ij')
        combos = np.stack([g.ravel() for g in grids], -1)
        return means[combos].reshape(len(combos), -1)


def _bumps(centers, width, heights):
    centers, heights = jnp.asarray(centers, jnp.float32), jnp.asarray(heights, jnp.float32)

    def q(a):
        return jnp.sum(heights * jnp.exp(-jnp.sum((a[..., None, :] - centers) ** 2, -1) / width), -1)

    return q


PROBLEMS = {
    # Closed form: Gaussian behavior, quadratic Q; the target is Gaussian, of precision 1/(s0² + σ/2) + 2β
    # (the KDE kernel adds σ/2 to the behavior's variance).
    'gauss1d': Problem('gauss1d', ((-0.3,),), (1.0,), 0.2, lambda a: -jnp.sum((a - 0.5) ** 2, -1)),
    # Three behavior modes; Q rewards the two outer ones (unequally): the target is bimodal.
    'mix1d': Problem(
        'mix1d', ((-0.6,), (0.0,), (0.6,)), (0.3, 0.4, 0.3), 0.1, _bumps([[-0.6], [0.6]], 0.08, [1.0, 1.5])
    ),
    # Four behavior modes at the corners; Q rewards the two on the diagonal.
    'mix2d': Problem(
        'mix2d',
        ((-0.5, -0.5), (-0.5, 0.5), (0.5, -0.5), (0.5, 0.5)),
        (0.25, 0.25, 0.25, 0.25),
        0.12,
        _bumps([[-0.5, -0.5], [0.5, 0.5]], 0.15, [1.0, 1.5]),
    ),
    # Five copies of a two-mode factor with a linear Q: a 32-mode product target in the benchmark's action size.
    'prod5d': Problem('prod5d', ((-0.5,), (0.5,)), (0.5, 0.5), 0.15, lambda a: 0.5 * a[..., 0], repeat=5),
}


def _log_smoothed_behavior(problem, points, sigma):
    """log of p_b smoothed by the kernel (component variance std² + σ/2), for the factor's points (..., d0)."""
    means, weights = np.asarray(problem.means), np.asarray(problem.weights)
    var = problem.std**2 + sigma / 2
    sq = np.sum((points[..., None, :] - means) ** 2, -1)
    log_comp = -sq / (2 * var) - 0.5 * means.shape[1] * np.log(2 * np.pi * var)
    return np.logaddexp.reduce(log_comp + np.log(weights), axis=-1)


def factor_grid(problem):
    """Grid points (N, d0) and cell volume of the factor's action box."""
    d0 = len(problem.means[0])
    n = GRID_1D if d0 == 1 else GRID_2D
    axis = np.linspace(-1, 1, n)
    points = np.stack(np.meshgrid(*[axis] * d0, indexing='ij'), -1).reshape(-1, d0)
    return points, (axis[1] - axis[0]) ** d0


def factor_target(problem, sigma, beta, log_prior=None):
    """Probabilities of the factor's target on its grid: ∝ p̂_ref·exp(βQ), or exp(log_prior + βQ) if given."""
    points, _ = factor_grid(problem)
    if log_prior is None:
        log_prior = _log_smoothed_behavior(problem, points, sigma)
    logits = log_prior + beta * np.asarray(problem.q(jnp.asarray(points, jnp.float32)))
    probs = np.exp(logits - logits.max())
    return points, probs / probs.sum()


def fixed_point_log_prior(problem, sigma, form, num_reference, num_sets=2048, seed=0):
    """1-D only: the log prior whose score is FAV's KDE score averaged over its reference draws.

    One state's update sees one reference set (the dataset action, or K BC samples); averaged over the
    batch, the score field is E_refs[score(x; refs)], which need not be the score of p̂_ref (with one
    softmax particle it is 2(E[y] - x)/σ: a Gaussian N(E[y], σ/2) whatever the behavior). Reference sets
    are drawn from the behavior (for bc_flow: assuming the flow has learned it). Integrated on the grid.
    """
    points, _ = factor_grid(problem)
    refs = problem.sample_behavior(np.random.default_rng(seed), num_sets * num_reference)
    refs = jnp.asarray(refs.reshape(num_sets, num_reference, 1))
    grid = jnp.asarray(points, jnp.float32)
    score = jax.vmap(lambda r: kde_score(grid, r, sigma, form))(refs).mean(0)[:, 0]
    score = np.asarray(score, np.float64)
    dx = points[1, 0] - points[0, 0]
    return np.concatenate([[0.0], np.cumsum((score[1:] + score[:-1]) / 2 * dx)])


def target_samples(problem, sigma, beta, n, rng, log_prior=None):
    """n samples of the target: grid cells drawn by probability, jittered uniformly within the cell."""
    points, cell = factor_grid(problem)
    _, probs = factor_target(problem, sigma, beta, log_prior)
    half = cell ** (1 / points.shape[1]) / 2
    idx = rng.choice(len(points), size=n * problem.repeat, p=probs)
    draws = points[idx] + rng.uniform(-half, half, size=(n * problem.repeat, points.shape[1]))
    return np.clip(draws, -1, 1).reshape(n, -1)


def target_mean(problem, sigma, beta, log_prior=None):
    points, probs = factor_target(problem, sigma, beta, log_prior)
    return np.tile(probs @ points, problem.repeat)


def target_std(problem, sigma, beta):
    """Norm of the target's per-dimension standard deviations, on its grid (exact, as target_mean)."""
    points, probs = factor_target(problem, sigma, beta)
    variance = probs @ (points - probs @ points) ** 2
    return float(np.sqrt(problem.repeat * variance.sum()))


def wasserstein_1d(problem, samples, sigma, beta, log_prior=None):
    """Exact W1 between 1-D samples and the target on its grid."""
    points, probs = factor_target(problem, sigma, beta, log_prior)
    return wasserstein_distance(samples[:, 0], points[:, 0], v_weights=probs)


@signals_held()  # it compiles for each new shape
@jax.jit
def _pair_means(x, y):
    """Mean Gaussian kernel and mean distance between the rows of x and y."""
    sq = jnp.maximum(jnp.sum(x**2, 1)[:, None] + jnp.sum(y**2, 1)[None] - 2 * x @ y.T, 0.0)
    return jnp.exp(-sq / (2 * MMD_LENGTHSCALE**2)).mean(), jnp.sqrt(sq + 1e-12).mean()


def mmd_and_energy(x, y):
    """MMD (biased V-statistic, Gaussian kernel of length scale MMD_LENGTHSCALE) and energy distance."""
    kxx, dxx = _pair_means(x, x)
    kyy, dyy = _pair_means(y, y)
    kxy, dxy = _pair_means(x, y)
    mmd = float(jnp.sqrt(jnp.maximum(kxx + kyy - 2 * kxy, 0.0)))
    return mmd, float(2 * dxy - dxx - dyy)


def mode_coverage(problem, samples, reference_samples):
    """Target mass the samples cover: Σ over mode cells of min(sample mass, target mass), in [0, 1].

    Mode cells: nearest behavior component mean (combinations of them for a product problem)."""
    anchors = problem.mode_anchors()

    def masses(x):
        cells = np.argmin(np.sum((x[:, None, :] - anchors) ** 2, -1), 1)
        return np.bincount(cells, minlength=len(anchors)) / len(x)

    return float(np.minimum(masses(samples), masses(reference_samples)).sum())
