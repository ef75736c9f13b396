"""FAV's pieces against independent computations, and its behavior on a bandit with a known answer."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.fav import FAVAgent, FAVConfig, get_config, kde_score, scott_bandwidth, svgd_direction
from datasets.buffer import GroupBuffer
from envs.registry import FAMILIES
from launch.compiled import as_group, offline_chunk


def _reference_phi(x, y, grad_q, sigma, beta):
    """φ from docs/algorithm.md written out with loops; the repulsive gradient by autodiff of the kernel."""
    m, d = x.shape

    def kernel(a, b):
        return jnp.exp(-jnp.sum((a - b) ** 2) / sigma)

    grad_kernel_first = jax.grad(kernel, argnums=0)
    ref_score = np.zeros((m, d))
    for p in range(m):
        weights = np.array([np.exp(-np.sum((x[p] - y[i]) ** 2) / sigma) for i in range(len(y))])
        ref_score[p] = sum(w * 2 * (y[i] - x[p]) / sigma for i, w in enumerate(weights)) / weights.sum()
    phi = np.zeros((m, d))
    for j in range(m):
        for p in range(m):
            k = float(kernel(x[p], x[j]))
            phi[j] += k * (ref_score[p] + beta * grad_q[p]) / m
            phi[j] += np.asarray(grad_kernel_first(jnp.asarray(x[p]), jnp.asarray(x[j]))) / m
    return phi


@pytest.mark.parametrize('num_reference', [1, 5])
def test_svgd_direction_matches_the_formula(num_reference):
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.8, 0.8, (6, 3))
    y = rng.uniform(-0.8, 0.8, (num_reference, 3))
    grad_q = rng.normal(size=(6, 3))
    for sigma, beta in [(0.5, 1.0), (1.0, 3.0), (0.3, 0.0)]:
        phi, info = svgd_direction(jnp.asarray(x), jnp.asarray(y), jnp.asarray(grad_q), sigma, beta)
        np.testing.assert_allclose(np.asarray(phi), _reference_phi(x, y, grad_q, sigma, beta), rtol=2e-4, atol=2e-5)
        assert np.isclose(float(info['reward_score_norm']), np.linalg.norm(beta * grad_q, axis=-1).mean(), rtol=1e-5)


def test_svgd_diagnostics_and_the_repulsion_switch_on_a_hand_computed_case():
    # Two 1-D samples 0.2 apart, σ = 0.1: k = exp(-0.04/0.1); reference particle at 0, ∇Q = 1, β = 2.
    x = jnp.array([[0.1], [-0.1]])
    y = jnp.array([[0.0]])
    grad_q = jnp.ones((2, 1))
    k = np.exp(-0.4)
    phi, info = svgd_direction(x, y, grad_q, 0.1, 2.0)
    assert np.isclose(float(info['kernel_offdiag_mean']), k, rtol=1e-5)
    prior = np.array([-2.0, 2.0])  # 2(0 - x)/σ
    share = np.abs(prior) / (np.abs(prior) + 2.0)
    assert np.isclose(float(info['prior_score_share']), share.mean(), rtol=1e-5)
    phi_driving, _ = svgd_direction(x, y, grad_q, 0.1, 2.0, repulsive=False)
    # Repulsion on sample 0: ½ ∇_{x_1} k(x_1, x_0) = ½ · (-2/σ)(x_1 - x_0) k = +2k (pushes it up).
    np.testing.assert_allclose(np.asarray(phi - phi_driving)[:, 0], [2 * k, -2 * k], rtol=1e-5)
    driving_0 = 0.5 * ((prior[0] + 2.0) + k * (prior[1] + 2.0))
    assert np.isclose(float(phi_driving[0, 0]), driving_0, rtol=1e-5)


def test_kde_score_is_exact_far_from_the_data():
    # 40 bandwidths away, exp(-d²/σ) underflows; the score must still point at the particle.
    x = jnp.array([[0.9, -0.9]])
    y = jnp.array([[-0.9, 0.9]])
    sigma = 0.01
    np.testing.assert_allclose(
        np.asarray(kde_score(x, y, sigma)), 2 * (np.asarray(y) - np.asarray(x)) / sigma, rtol=1e-6
    )
    # Two particles, one much closer: the score is dominated by the close one, not pulled to the origin.
    y2 = jnp.array([[0.8, -0.8], [-0.9, 0.9]])
    np.testing.assert_allclose(
        np.asarray(kde_score(x, y2, sigma)), 2 * (np.array([[0.8, -0.8]]) - np.asarray(x)) / sigma, rtol=1e-5
    )


def _clipped_reference_score(x, y, sigma):
    """The public reference code's formula written out: 2(Σ_i k_i y_i - S·x)/(σ·S), S = max(Σ_i k_i, 1e-6)."""
    out = np.zeros_like(x)
    for p in range(len(x)):
        k = np.exp(-np.sum((x[p] - y) ** 2, -1) / sigma)
        s = max(k.sum(), 1e-6)
        out[p] = 2 * ((k[:, None] * y).sum(0) - s * x[p]) / (sigma * s)
    return out


def test_clipped_kde_score_is_the_reference_formula():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (7, 3))
    y = rng.uniform(-1, 1, (4, 3))
    # σ = 0.05 puts many pairs past the clip (||x-y||² > 13.8σ), σ = 0.5 none: both branches are checked.
    for sigma in (0.05, 0.5):
        expected = _clipped_reference_score(x, y, sigma)
        got = np.asarray(kde_score(jnp.asarray(x), jnp.asarray(y), sigma, 'clipped'))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Near the data both forms agree; far from it the clipped form is -2x/σ, a pull toward the origin.
    near, far = jnp.array([[0.1, 0.2]]), jnp.array([[0.9, -0.9]])
    y = jnp.array([[0.12, 0.25]])
    np.testing.assert_allclose(kde_score(near, y, 0.1, 'clipped'), kde_score(near, y, 0.1), rtol=1e-5)
    far_y = jnp.array([[-0.9, 0.9]])
    np.testing.assert_allclose(kde_score(far, far_y, 0.01, 'clipped'), -2 * far / 0.01, rtol=1e-6)
    # svgd_direction's default is the softmax form; the keyword selects the clipped one.
    grad_q = jnp.zeros((1, 2))
    phi_default, _ = svgd_direction(far, far_y, grad_q, 0.01, 1.0)
    phi_clipped, _ = svgd_direction(far, far_y, grad_q, 0.01, 1.0, prior_score='clipped')
    np.testing.assert_allclose(phi_default, 2 * (far_y - far) / 0.01, rtol=1e-5)
    np.testing.assert_allclose(phi_clipped, -2 * far / 0.01, rtol=1e-5)


def test_scott_bandwidth_on_a_known_sample():
    # Dimension 0: values ±1 (std 1); dimension 1: ±3 (std 3) → mean std 2; n = 4, d = 2.
    actions = jnp.array([[1.0, 3.0], [-1.0, -3.0], [1.0, -3.0], [-1.0, 3.0]])
    h = 4 ** (-1 / 6) * 2.0
    assert np.isclose(float(scott_bandwidth(actions)), 2 * h**2, rtol=1e-6)
    # A constant batch uses the 1e-4 floor instead of a zero bandwidth.
    assert np.isclose(float(scott_bandwidth(jnp.zeros((4, 2)))), 2 * (4 ** (-1 / 6) * 1e-4) ** 2, rtol=1e-5)


@pytest.mark.parametrize(
    'override, message',
    [
        (dict(sigma=0.0), 'sigma'),
        (dict(beta=-1.0), 'beta'),
        (dict(num_samples=0), 'num_samples'),
        (dict(bandwidth_method='silverman'), 'bandwidth_method'),
        (dict(reference='replay'), 'reference'),
        (dict(prior_score='clip'), 'prior_score'),
        (dict(svgd_steps=0), 'svgd_steps'),
    ],
)
def test_invalid_settings_fail_with_a_message(override, message):
    with pytest.raises(ValueError, match=message):
        FAVConfig(**override).validate()


def test_registry_defaults_reach_the_config():
    family = FAMILIES['antmaze-giant-navigate']
    config = get_config(family)
    assert (config.sigma, config.beta, config.discount, config.q_agg) == (0.5, 1.0, 0.995, 'min')
    adaptive = get_config(FAMILIES['puzzle-4x4-play'], {'bandwidth_method': 'scott'})
    assert adaptive.beta == 0.1 and adaptive.bandwidth_method == 'scott'
    assert get_config(FAMILIES['puzzle-4x4-play'], {'beta': 2.0}).beta == 2.0


def _batch(rng, n=64, obs_dim=4, act_dim=2):
    keys = jax.random.split(rng, 4)
    return dict(
        observations=jax.random.normal(keys[0], (n, obs_dim)),
        actions=jnp.clip(jax.random.normal(keys[1], (n, act_dim)) * 0.3, -0.99, 0.99),
        next_observations=jax.random.normal(keys[2], (n, obs_dim)),
        rewards=jax.random.normal(keys[3], (n,)),
        masks=jnp.ones((n,)),
        terminals=jnp.zeros((n,)),
    )


def test_fixed_point_step_moves_samples_toward_x_plus_phi():
    config = FAVConfig(hidden_dims=(64, 64), batch_size=64, lr=1e-3, sigma=0.5, beta=1.0)
    batch = _batch(jax.random.PRNGKey(0))
    agent = FAVAgent.create(jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], config)
    noise = jax.random.normal(jax.random.PRNGKey(2), (64, config.num_samples, 2))
    obs = jnp.repeat(batch['observations'][:, None], config.num_samples, 1)

    @jax.jit
    def samples(actor_params):
        return agent.actor.apply_fn(actor_params, obs, noise)

    x0 = samples(agent.actor.params)

    def mean_q(a):
        return agent.critic.apply_fn(agent.critic.params, obs, a).mean(0).sum()

    phi, _ = jax.jit(jax.vmap(svgd_direction, in_axes=(0, 0, 0, None, None)))(
        x0, batch['actions'][:, None], jax.jit(jax.grad(mean_q))(x0), 0.5, 1.0
    )
    targets = x0 + phi

    @jax.jit
    def loss(actor_params):
        return jnp.mean(jnp.sum((targets - samples(actor_params)) ** 2, -1))

    # The agent's actor loss, evaluated at its own parameters, is this fixed-point loss.
    params = agent.actor.params
    descend = jax.jit(lambda p: jax.tree_util.tree_map(lambda p, g: p - 1e-3 * g, p, jax.grad(loss)(p)))
    for _ in range(5):
        params = descend(params)
    x1 = samples(params)
    assert float(loss(params)) < float(loss(agent.actor.params))
    # The samples moved along φ, not against it.
    assert float(jnp.sum((x1 - x0) * phi)) > 0


def test_agent_update_reduces_its_fixed_point_loss_and_reports_metrics():
    config = FAVConfig(hidden_dims=(64, 64), batch_size=64, sigma=0.5, beta=1.0)
    batch = _batch(jax.random.PRNGKey(0))
    agent = FAVAgent.create(jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], config)
    _, info = agent.update(batch)
    for key in (
        'critic_loss',
        'q_mean',
        'actor_loss',
        'phi_norm',
        'reference_score_norm',
        'reward_score_norm',
        'bandwidth',
        'prior_score_share',
        'kernel_offdiag_mean',
        'residual_before',
        'residual_after',
    ):
        assert np.isfinite(float(info[key])), key
    assert float(info['bandwidth']) == 0.5
    _, info = dataclasses.replace(agent, config=dataclasses.replace(config, bandwidth_method='scott')).update(batch)
    assert np.isclose(float(info['bandwidth']), float(scott_bandwidth(batch['actions'])), rtol=1e-5)


def test_bc_flow_reference_trains_alongside():
    config = FAVConfig(hidden_dims=(32, 32), batch_size=64, reference='bc_flow', num_reference=4, flow_steps=4)
    batch = _batch(jax.random.PRNGKey(0))
    agent = FAVAgent.create(jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], config)
    losses = []
    for _ in range(30):
        agent, info = agent.update(batch)
        losses.append(float(info['bc_flow_loss']))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_agent_vmaps_over_seeds():
    config = FAVConfig(hidden_dims=(32,), batch_size=64)
    batch = _batch(jax.random.PRNGKey(0))
    agents = jax.vmap(lambda key: FAVAgent.create(key, batch['observations'][:1], batch['actions'][:1], config))(
        jax.random.split(jax.random.PRNGKey(0), 3)
    )
    agents, info = jax.vmap(lambda a: a.update(batch))(agents)
    assert info['critic_loss'].shape == (3,)
    assert len(set(np.asarray(info['critic_loss']).round(6).tolist())) == 3  # seeds differ


def _bandit_buffer(n=4096, mu0=-0.3, s0=0.2, target=0.5):
    rng = np.random.default_rng(0)
    actions = np.clip(rng.normal(mu0, s0, (n, 1)), -0.99, 0.99).astype(np.float32)
    return GroupBuffer.of_one_task(
        dict(
            observations=np.ones((n, 1), np.float32),
            actions=actions,
            next_observations=np.ones((n, 1), np.float32),
            rewards=-((actions[:, 0] - target) ** 2),
            masks=np.zeros(n, np.float32),
            terminals=np.ones(n, np.float32),
        )
    ), actions


def _train_bandit(beta, steps=1000):
    buffer, actions = _bandit_buffer()
    # The closed form below is the softmax prior's (the clipped one pulls toward the origin far from the data).
    config = FAVConfig(
        hidden_dims=(64, 64), batch_size=64, sigma=0.05, beta=beta, discount=0.0, lr=1e-3, prior_score='softmax'
    )
    agent = FAVAgent.create(jax.random.PRNGKey(0), np.ones((1, 1), np.float32), actions[:1], config)
    agents, _, finite = offline_chunk(as_group(agent), buffer, jax.random.PRNGKey(1)[None], 0, steps, config.batch_size)
    assert bool(finite[0])
    agent = jax.tree_util.tree_map(lambda x: x[0], agents)
    sampled = np.asarray(agent.sample_actions(jnp.ones((4000, 1)), jax.random.PRNGKey(2)))[:, 0]
    return sampled.mean(), sampled.std(), actions[:, 0]


def _tilted_mean(behavior_mean, sigma, beta, target):
    """Mean of the fixed point for Q = -(a - c)² with one dataset reference particle per state.

    Averaged over the data, the KDE score 2(y - x)/σ is 2(μ0 - x)/σ: the score of N(μ0, σ/2). Tilting
    that Gaussian by exp(β Q) gives precision 2/σ + 2β and the mean below.
    """
    prior_precision = 2.0 / sigma
    return (prior_precision * behavior_mean + 2 * beta * target) / (prior_precision + 2 * beta)


@pytest.mark.slow
def test_bandit_mean_moves_toward_the_q_optimum_as_beta_grows():
    means = []
    for beta in (0.0, 8.0):
        mean, std, behavior = _train_bandit(beta)
        expected = _tilted_mean(behavior.mean(), 0.05, beta, 0.5)
        assert abs(mean - expected) < 0.025, (beta, mean, expected)
        assert std > 0.05, (beta, std)  # spread kept, not collapsed to a point
        means.append(mean)
    assert abs(means[0] - behavior.mean()) < 0.025  # β = 0: the behavior mean
    assert means[0] < means[1] < 0.5, means  # toward the optimum as β grows
