"""FAV's pieces against independent computations, and its behavior on a bandit with a known answer."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.fav import FAVAgent, FAVConfig, get_config, kde_score, scott_bandwidth, svgd_direction
from datasets.buffer import GroupBuffer
from envs.registry import FAMILIES
from launch.compiled import as_group
from tests.agent_helpers import has_layer_norm, trained_offline_chunk


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
        # The vectorized oracle the agent-level tests below use agrees with this loop.
        np.testing.assert_allclose(
            _phi(x, y, grad_q, sigma, beta), _reference_phi(x, y, grad_q, sigma, beta), rtol=1e-5
        )
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
    # The norms docs/diagnostics.md lists: each term's own, averaged over the samples.
    assert np.isclose(float(info['repulsive_norm']), 2 * k, rtol=1e-5)
    assert np.isclose(float(info['reference_score_norm']), 2.0, rtol=1e-5)
    assert np.isclose(float(info['reward_score_norm']), 2.0, rtol=1e-5)
    assert np.isclose(float(info['phi_norm']), np.abs(np.asarray(phi)).mean(), rtol=1e-5)


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
        (dict(discount=1.0), 'discount'),  # γ = 1: the TD targets have no fixed point
        (dict(discount=-0.1), 'discount'),
    ],
)
def test_invalid_settings_fail_with_a_message(override, message):
    with pytest.raises(ValueError, match=message):
        FAVConfig(**override).validate()


def test_beta_of_zero_and_a_single_sample_are_accepted():
    # β >= 0 and M >= 1: β = 0 (no Q tilt, the actor fits the reference alone) and M = 1 (one sample, no
    # repulsion) are the bounds, ablations a run may ask for, not refused settings.
    config = FAVConfig(beta=0.0, num_samples=1).validate()
    assert config.beta == 0.0 and config.num_samples == 1


def test_a_single_sample_trains_its_prior_and_q_terms_alone():
    """M = 1 was accepted but never trained: with one sample the kernel has no other sample to repel, and φ is
    the prior's score and β∇Q alone; the loss is the docs' one and every metric of an update is finite (a mean
    over the M(M-1) pairs of other samples would be 0/0)."""
    n, sigma, beta = 5, 0.3, 2.0
    config = FAVConfig(hidden_dims=(16, 16), batch_size=n, num_samples=1, sigma=sigma, beta=beta)
    batch = _small_batch(n)
    agent = _known_q_agent(config, batch)
    rng = jax.random.PRNGKey(6)
    x, _ = _loss_inputs(agent, batch, rng)
    expected, _ = _expected_actor_loss(x, _f64(batch['actions'])[:, None], sigma, beta, config.prior_score)
    loss, _ = agent._actor_loss(agent.actor.params, batch, rng)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)

    config = FAVConfig(hidden_dims=(16,), batch_size=64, num_samples=1)
    full = _batch(jax.random.PRNGKey(1))
    agent = FAVAgent.create(jax.random.PRNGKey(2), full['observations'][:1], full['actions'][:1], config)
    for _ in range(2):
        agent, info = agent.update(full)
        assert all(np.isfinite(np.asarray(v)).all() for v in info.values()), info


def test_actor_layer_norm_reaches_the_generator_and_the_bc_flow_reference():
    # The policy networks' setting, as FQL's and IFQL's BC flows take it; never the critic's.
    obs, actions = jnp.zeros((1, 4)), jnp.zeros((1, 2))
    plain, normed = (
        FAVAgent.create(0, obs, actions, FAVConfig(hidden_dims=(8, 8), actor_layer_norm=on, reference='bc_flow'))
        for on in (False, True)
    )
    for network in ('actor', 'bc_flow'):
        assert not has_layer_norm(getattr(plain, network).params), network
        assert has_layer_norm(getattr(normed, network).params), network
    assert has_layer_norm(plain.critic.params) and has_layer_norm(normed.critic.params)


@pytest.mark.parametrize(
    'overrides, refused',
    [
        ({'bandwidth_method': 'scott', 'sigma': 0.3}, 'agent.sigma is not used with agent.bandwidth_method=scott'),
        ({'num_reference': 4}, 'agent.num_reference is used only with agent.reference=bc_flow'),
        ({'reference': 'dataset', 'flow_steps': 5}, 'agent.flow_steps is used only with agent.reference=bc_flow'),
    ],
)
def test_a_setting_the_run_would_not_use_is_refused(overrides, refused):
    with pytest.raises(ValueError, match=re.escape(refused)):
        get_config(FAMILIES['cube-double-play'], overrides)
    # With the setting that uses them, they are taken.
    used = {**overrides, 'bandwidth_method': 'fixed'} if 'sigma' in overrides else {**overrides, 'reference': 'bc_flow'}
    config = get_config(FAMILIES['cube-double-play'], used)
    assert all(getattr(config, k) == v for k, v in used.items())


def test_default_config_and_networks_are_the_designs():
    # docs/algorithm.md's defaults: Adam 3e-4, batch 256, MLPs 4 × 512, critic LayerNorm on, actor off, 2 critics,
    # γ = 0.99, τ = 0.005, M = 8, mean target, the dataset action as the reference, fixed σ, one SVGD move with
    # repulsion, and the reference code's clipped KDE score.
    config = FAVConfig()
    expected = dict(
        lr=3e-4,
        batch_size=256,
        hidden_dims=(512, 512, 512, 512),
        critic_layer_norm=True,
        actor_layer_norm=False,
        num_qs=2,
        discount=0.99,
        tau=0.005,
        num_samples=8,
        q_agg='mean',
        reference='dataset',
        bandwidth_method='fixed',
        prior_score='clipped',
        repulsive=True,
        svgd_steps=1,
        train_critic=True,
    )
    assert {k: getattr(config, k) for k in expected} == expected
    # A registry family keeps them (only σ, β, γ and the target's aggregation are per environment).
    family_config = get_config(FAMILIES['cube-double-play'])
    assert {k: getattr(family_config, k) for k in expected} == expected
    # And the networks built from them: 4 hidden layers of 512 (+ the output layer), LayerNorm in the critic only.
    obs, act = jnp.zeros((1, 5)), jnp.zeros((1, 3))
    agent = FAVAgent.create(0, obs, act, config)
    actor_kernels = [p for path, p in jax.tree_util.tree_leaves_with_path(agent.actor.params) if 'kernel' in str(path)]
    assert [k.shape[-1] for k in actor_kernels] == [512, 512, 512, 512, 3]
    assert actor_kernels[0].shape[0] == 5 + 3  # [s, z]
    assert has_layer_norm(agent.critic.params) and not has_layer_norm(agent.actor.params)
    assert agent.critic.apply_fn(agent.critic.params, obs, act).shape == (2, 1)


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


def _phi(x, y, grad_q, sigma, beta, form='softmax'):
    """φ of docs/algorithm.md for one state in float64 NumPy, vectorized: x (M, d), y (K, d), grad_q (M, d)."""
    m = len(x)
    sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)  # (M, K)
    if form == 'softmax':
        w = np.exp(-(sq - sq.min(1, keepdims=True)) / sigma)
        w /= w.sum(1, keepdims=True)
        score = 2 * (w @ y - x) / sigma
    else:  # 'clipped': the reference code's denominator, floored at 1e-6
        k = np.exp(-sq / sigma)
        total = np.maximum(k.sum(1, keepdims=True), 1e-6)
        score = 2 * (k @ y - total * x) / (sigma * total)
    diffs = x[:, None, :] - x[None, :, :]  # [l, j] = x_l - x_j
    kernel = np.exp(-(diffs**2).sum(-1) / sigma)  # [l, j] = k(x_l, x_j)
    driving = kernel.T @ (score + beta * grad_q) / m
    return driving + (-2 / sigma * diffs * kernel[..., None]).sum(0) / m


def _batch_phi(x, y, grad_q, sigma, beta, form):
    """_phi for every state: x (B, M, d), y (B, K, d), grad_q (B, M, d)."""
    return np.stack([_phi(x[b], y[b], grad_q[b], sigma, beta, form) for b in range(len(x))])


def _f64(x):
    return np.asarray(x, np.float64)


def _update_keys(agent):
    """The keys `update` splits from agent.rng: (critic, actor, flow); the actor key splits into (noise, reference)."""
    _, critic_key, actor_key, flow_key = jax.random.split(agent.rng, 4)
    return critic_key, actor_key, flow_key


def _actor_samples(agent, actor_params, observations, noises):
    """x_j = π(s, z_j) for noises (B, M, d), as float64."""
    obs = jnp.repeat(jnp.asarray(observations)[:, None, :], noises.shape[1], axis=1)
    return _f64(agent.actor.apply_fn(actor_params, obs, noises))


def _critic_grad(agent, observations, actions):
    """∇_a of the current critic's ensemble mean at actions (B, M, d): autodiff of the network, float64."""
    obs = jnp.repeat(jnp.asarray(observations)[:, None, :], actions.shape[1], axis=1)

    def mean_q(a):
        return agent.critic.apply_fn(agent.critic.params, obs, a).mean(0).sum()

    return _f64(jax.grad(mean_q)(jnp.asarray(actions, jnp.float32)))


UPDATE_METRICS = (
    'critic_loss',
    'q_mean',
    'actor_loss',
    'phi_norm',
    'reference_score_norm',
    'reward_score_norm',
    'bandwidth',
    'prior_score_share',
    'kernel_offdiag_mean',
    'sample_std',
    'residual_before',
    'residual_after',
)


def test_update_regresses_the_actor_onto_x_plus_phi_and_reports_its_residuals():
    # 40 states: more than the 32 on which the residuals are measured, so their slicing is checked too.
    n, sigma, beta = 40, 0.5, 1.0
    config = FAVConfig(hidden_dims=(32, 32), batch_size=n, lr=1e-3, sigma=sigma, beta=beta)
    batch = _batch(jax.random.PRNGKey(0), n=n)
    agent = FAVAgent.create(jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], config)
    # A target critic unlike the critic, so that ∇Q of the wrong one fails.
    other = FAVAgent.create(jax.random.PRNGKey(2), batch['observations'][:1], batch['actions'][:1], config)
    agent = agent.replace(target_critic_params=other.critic.params)
    # The samples the update draws (its noise key reproduced), and φ computed here from the docs' formula.
    _, actor_key, _ = _update_keys(agent)
    noise_key, _ = jax.random.split(actor_key)
    noises = jax.random.normal(noise_key, (n, config.num_samples, 2))
    x0 = _actor_samples(agent, agent.actor.params, batch['observations'], noises)
    reference = _f64(batch['actions'])[:, None, :]
    grad_q = _critic_grad(agent, batch['observations'], x0)
    phi = _batch_phi(x0, reference, grad_q, sigma, beta, config.prior_score)
    assert np.linalg.norm(phi, axis=-1).mean() > 0.1  # a real move

    new, info = agent.update(batch)
    for key in UPDATE_METRICS:
        assert np.isfinite(float(info[key])), key
    assert float(info['bandwidth']) == sigma
    np.testing.assert_allclose(float(info['actor_loss']), np.mean((phi**2).sum(-1)), rtol=1e-4)
    np.testing.assert_allclose(float(info['phi_norm']), np.linalg.norm(phi, axis=-1).mean(), rtol=1e-4)
    np.testing.assert_allclose(
        float(info['reward_score_norm']), beta * np.linalg.norm(grad_q, axis=-1).mean(), rtol=1e-4
    )
    np.testing.assert_allclose(float(info['residual_before']), np.linalg.norm(phi[:32], axis=-1).mean(), rtol=1e-4)
    # sample_std: the spread of each state's M samples (not of the batch of states), averaged over states and dims.
    per_state_std = np.sqrt(((x0 - x0.mean(1, keepdims=True)) ** 2).mean(1)).mean()
    np.testing.assert_allclose(float(info['sample_std']), per_state_std, rtol=1e-4)
    assert not np.isclose(per_state_std, x0.std(0).mean(), rtol=0.05)  # the batch's spread is another number

    # The step moved the samples (same states and noises) toward the fixed targets x + φ, along φ.
    x1 = _actor_samples(agent, new.actor.params, batch['observations'], noises)
    assert np.mean(((x0 + phi - x1) ** 2).sum(-1)) < np.mean((phi**2).sum(-1))
    assert np.sum((x1 - x0) * phi) > 0
    # residual_after: mean ||φ|| at the moved actor's samples of the first 32 states, with the critic of before
    # the step (the update's critic changed; `agent` still holds the old one).
    grad_q1 = _critic_grad(agent, batch['observations'][:32], x1[:32])
    phi1 = _batch_phi(x1[:32], reference[:32], grad_q1, sigma, beta, config.prior_score)
    np.testing.assert_allclose(float(info['residual_after']), np.linalg.norm(phi1, axis=-1).mean(), rtol=1e-4)
    assert not np.isclose(float(info['residual_after']), float(info['residual_before']), rtol=1e-4)


def test_actor_gradient_treats_x_plus_phi_as_a_fixed_target():
    # L = mean_j ||sg(x_j + φ_j) − x_j||² over the B·M samples, so ∇_θ L = Σ_j (−2 φ_j / (B·M))·∂x_j/∂θ: the
    # pull-back of −2φ/(B·M) through the sample map alone. Without the stop-gradient on x + φ the loss is
    # ||φ(x)||², whose gradient flows through φ instead and is another vector (its loss value is the same).
    n, sigma, beta = 8, 0.5, 1.0
    config = FAVConfig(hidden_dims=(16, 16), batch_size=n, sigma=sigma, beta=beta)
    batch = _batch(jax.random.PRNGKey(0), n=n)
    agent = FAVAgent.create(jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], config)
    _, actor_key, _ = _update_keys(agent)
    noise_key, _ = jax.random.split(actor_key)
    m = config.num_samples
    noises = jax.random.normal(noise_key, (n, m, 2))
    obs = jnp.repeat(batch['observations'][:, None, :], m, axis=1)
    x0 = _actor_samples(agent, agent.actor.params, batch['observations'], noises)
    grad_q = _critic_grad(agent, batch['observations'], x0)
    phi = _batch_phi(x0, _f64(batch['actions'])[:, None, :], grad_q, sigma, beta, config.prior_score)
    assert np.linalg.norm(phi, axis=-1).mean() > 0.1  # a real move

    _, pull_back = jax.vjp(lambda p: agent.actor.apply_fn(p, obs, noises), agent.actor.params)
    (expected,) = pull_back(jnp.asarray(-2.0 * phi / (n * m), jnp.float32))
    grads, _ = jax.grad(agent._actor_loss, has_aux=True)(agent.actor.params, batch, actor_key)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_allclose(_f64(got), _f64(want), rtol=1e-3, atol=1e-6)


def test_update_draws_the_critics_next_actions_from_its_own_key():
    # The critic's key is the second of the four split from agent.rng, not the actor's (one key for both
    # would tie the next actions of the TD target to the actor's samples).
    config = FAVConfig(hidden_dims=(16, 16), batch_size=16)
    batch = _batch(jax.random.PRNGKey(0), n=16)
    agent = FAVAgent.create(jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], config)
    critic_key, actor_key, _ = _update_keys(agent)
    expected = float(agent._critic_loss(agent.critic.params, batch, critic_key)[0])
    assert not np.isclose(expected, float(agent._critic_loss(agent.critic.params, batch, actor_key)[0]), rtol=1e-4)
    new, info = agent.update(batch)
    np.testing.assert_allclose(float(info['critic_loss']), expected, rtol=1e-5)
    # The agent carries the first key of the split: the next update draws fresh noise, not this one's again.
    np.testing.assert_array_equal(np.asarray(new.rng), np.asarray(jax.random.split(agent.rng, 4)[0]))


def test_generator_actions_have_the_right_shape_and_lie_in_the_box():
    config = FAVConfig(hidden_dims=(16, 16), batch_size=8)
    batch = _batch(jax.random.PRNGKey(0), n=8)
    agent = FAVAgent.create(jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], config)
    # Large weights and far-out states push the raw network outputs well past ±1.
    loud = agent.replace(actor=agent.actor.replace(params=jax.tree_util.tree_map(lambda x: 4 * x, agent.actor.params)))
    observations, key = 10.0 * batch['observations'], jax.random.PRNGKey(3)
    batched = np.asarray(loud.sample_actions(observations, key))
    single = np.asarray(loud.sample_actions(observations[0], key))
    assert batched.shape == (8, 2) and single.shape == (2,)
    assert np.abs(batched).max() <= 1.0 and np.abs(single).max() <= 1.0
    assert np.mean(np.abs(batched) == 1.0) > 0.2  # many outputs were clipped


def test_bc_flow_reference_trains_alongside_on_the_flow_matching_loss():
    config = FAVConfig(hidden_dims=(32, 32), batch_size=64, lr=1e-3, reference='bc_flow', num_reference=4, flow_steps=4)
    batch = _batch(jax.random.PRNGKey(0))
    agent = FAVAgent.create(jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], config)
    # The flow-matching loss with the x_0 and t drawn from the update's flow key, written out here.
    _, _, flow_key = _update_keys(agent)
    noise_key, time_key = jax.random.split(flow_key)
    actions = batch['actions']
    x0 = jax.random.normal(noise_key, actions.shape)
    t = jax.random.uniform(time_key, (64, 1))
    xt = (1 - t) * x0 + t * actions

    def flow_loss(params):
        return jnp.mean((agent.bc_flow.apply_fn(params, batch['observations'], xt, t) - (actions - x0)) ** 2)

    expected_loss, grads = jax.value_and_grad(flow_loss)(agent.bc_flow.params)
    new, info = agent.update(batch)
    np.testing.assert_allclose(float(info['bc_flow_loss']), float(expected_loss), rtol=1e-5)
    # One Adam step on that loss's gradient: the flow trains on the batch's dataset actions with its own key.
    expected = agent.bc_flow.apply_gradients(grads=grads).params
    for got, want in zip(
        jax.tree_util.tree_leaves(new.bc_flow.params), jax.tree_util.tree_leaves(expected), strict=True
    ):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
    # And it keeps training: 30 more updates lower its loss at the x_0 and t above.
    for _ in range(30):
        new, _ = new.update(batch)
    assert float(flow_loss(new.bc_flow.params)) < 0.9 * float(expected_loss)
    # With the dataset reference there is no flow to train.
    plain = FAVAgent.create(
        jax.random.PRNGKey(1), batch['observations'][:1], batch['actions'][:1], FAVConfig(hidden_dims=(32, 32))
    )
    assert plain.bc_flow is None


# ------------------------------------------------------------------------------------------------
# The variants' actor loss against docs/algorithm.md, with a critic whose gradient is known in closed form

OBS_DIM, ACT_DIM = 3, 2
CENTERS = np.array([[0.6, -0.4], [0.2, 0.8]])  # ensemble mean center c̄ = (0.4, 0.2)


def _quadratic_critic(params, observations, actions):
    """Q_k(s, a) = -||a - c_k||² for ensemble member k, output (num_qs, ...) like CriticEnsemble: ∇_a Q̄ = -2(a - c̄)."""
    centers = params['centers'].reshape((-1,) + (1,) * (actions.ndim - 1) + (actions.shape[-1],))
    return -jnp.sum((actions[None] - centers) ** 2, -1)


def _small_batch(n):
    rng = np.random.default_rng(0)
    return dict(
        observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-0.9, 0.9, (n, ACT_DIM)).astype(np.float32),
    )


def _known_q_agent(config, batch):
    agent = FAVAgent.create(jax.random.PRNGKey(0), batch['observations'][:1], batch['actions'][:1], config)
    critic = agent.critic.replace(apply_fn=_quadratic_critic, params={'centers': jnp.asarray(CENTERS, jnp.float32)})
    return agent.replace(critic=critic)


def _expected_actor_loss(x, reference, sigma, beta, form, steps=1):
    """mean_j ||x_j^(n) - x_j||² where x^(i+1) = x^(i) + φ(x^(i))/n (n = 1: the docs' sg(x + φ)); also φ(x)."""
    moved, first = x, None
    for _ in range(steps):
        phi = _batch_phi(moved, reference, -2 * (moved - CENTERS.mean(0)), sigma, beta, form)
        first = phi if first is None else first
        moved = moved + phi / steps
    return np.mean(((moved - x) ** 2).sum(-1)), first


def _loss_inputs(agent, batch, rng):
    """The actor's samples x (B, M, d) drawn from the loss's noise key, and its reference key."""
    noise_key, reference_key = jax.random.split(rng)
    noises = jax.random.normal(noise_key, (len(batch['observations']), agent.config.num_samples, ACT_DIM))
    return _actor_samples(agent, agent.actor.params, batch['observations'], noises), reference_key


def _linear_velocity(params, observations, noisy_actions, times):
    """v(s, x, t) = λx + c(s), c(s) = W s: independent of t, so N Euler steps from z land on x* + r^N (z - x*)
    with x* = -c/λ and r = 1 + λ/N (the fixed point x* of the recursion x ← r x + c/N)."""
    return params['lam'] * noisy_actions + observations @ params['w']


LINEAR_FLOW_W = np.array([[0.3, -0.2], [0.1, 0.25], [-0.2, 0.1]])
LINEAR_FLOW_LAMBDA = -0.5


def _with_linear_flow(agent):
    flow = dict(lam=jnp.float32(LINEAR_FLOW_LAMBDA), w=jnp.asarray(LINEAR_FLOW_W, jnp.float32))
    return agent.replace(bc_flow=agent.bc_flow.replace(apply_fn=_linear_velocity, params=flow))


def _linear_flow_reference(batch, reference_key, num_reference, flow_steps):
    """The K reference particles of _with_linear_flow's agent: the flow's Euler integral in closed form, from
    the reference key's noises, clipped to the action box."""
    z = _f64(jax.random.normal(reference_key, (len(batch['observations']), num_reference, ACT_DIM)))
    fixed_point = (_f64(batch['observations']) @ LINEAR_FLOW_W / -LINEAR_FLOW_LAMBDA)[:, None, :]  # -c/λ
    decay = (1 + LINEAR_FLOW_LAMBDA / flow_steps) ** flow_steps
    return np.clip(fixed_point + decay * (z - fixed_point), -1, 1)


@pytest.mark.parametrize('prior_score', ['clipped', 'softmax'])
def test_bc_flow_reference_particles_are_k_flow_samples_in_the_actor_loss(prior_score):
    num_reference, flow_steps, sigma, beta = 5, 4, 0.2, 1.5
    config = FAVConfig(
        hidden_dims=(16, 16),
        batch_size=3,
        num_samples=4,
        sigma=sigma,
        beta=beta,
        reference='bc_flow',
        num_reference=num_reference,
        flow_steps=flow_steps,
        prior_score=prior_score,
    )
    batch = _small_batch(3)
    agent = _with_linear_flow(_known_q_agent(config, batch))
    rng = jax.random.PRNGKey(3)
    x, reference_key = _loss_inputs(agent, batch, rng)
    reference = _linear_flow_reference(batch, reference_key, num_reference, flow_steps)
    assert 0 < np.mean(np.abs(reference) == 1) < 0.1  # a few clipped to the box, the rest the flow's own
    assert np.abs(reference - _f64(batch['actions'])[:, None]).min() > 0.01  # not the dataset actions
    expected, phi = _expected_actor_loss(x, reference, sigma, beta, prior_score)
    assert np.linalg.norm(phi, axis=-1).min() > 0.1
    dataset_loss, _ = _expected_actor_loss(x, _f64(batch['actions'])[:, None], sigma, beta, prior_score)
    assert not np.isclose(expected, dataset_loss, rtol=0.05)  # the reference particles matter

    loss, (info, _) = agent._actor_loss(agent.actor.params, batch, rng)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    np.testing.assert_allclose(float(info['phi_norm']), np.linalg.norm(phi, axis=-1).mean(), rtol=1e-4)


def _scott_sigma(actions):
    """Scott's rule written out: σ = 2h², h = n^(-1/(d+4))·std, std the population standard deviation
    averaged over the d action dimensions."""
    n, d = actions.shape
    std = np.mean([np.sqrt(np.mean((col - col.mean()) ** 2)) for col in actions.T])
    return 2 * (n ** (-1 / (d + 4)) * std) ** 2


@pytest.mark.parametrize('prior_score', ['clipped', 'softmax'])
def test_scott_bandwidth_is_the_one_the_actor_loss_uses(prior_score):
    n, beta = 8, 1.0
    config = FAVConfig(
        hidden_dims=(16, 16),
        batch_size=n,
        num_samples=4,
        sigma=2.0,
        beta=beta,
        bandwidth_method='scott',
        prior_score=prior_score,
    )
    batch = _small_batch(n)
    agent = _known_q_agent(config, batch)
    rng = jax.random.PRNGKey(4)
    x, _ = _loss_inputs(agent, batch, rng)

    actions = _f64(batch['actions'])
    sigma = _scott_sigma(actions)  # Scott's rule on the batch's dataset actions (docs/algorithm.md, step 3)
    assert 0.05 < sigma < 0.5  # far from the config's fixed σ = 2
    expected, _ = _expected_actor_loss(x, actions[:, None], sigma, beta, prior_score)
    fixed_sigma_loss, _ = _expected_actor_loss(x, actions[:, None], 2.0, beta, prior_score)
    assert not np.isclose(expected, fixed_sigma_loss, rtol=0.05)

    loss, (info, _) = agent._actor_loss(agent.actor.params, batch, rng)
    np.testing.assert_allclose(float(info['bandwidth']), sigma, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


@pytest.mark.parametrize('prior_score', ['clipped', 'softmax'])
def test_scott_bandwidth_with_bc_flow_particles_comes_from_the_batchs_dataset_actions(prior_score):
    n, num_reference, flow_steps, beta = 8, 4, 2, 1.0
    config = FAVConfig(
        hidden_dims=(16, 16),
        batch_size=n,
        num_samples=4,
        beta=beta,
        bandwidth_method='scott',
        reference='bc_flow',
        num_reference=num_reference,
        flow_steps=flow_steps,
        prior_score=prior_score,
    )
    batch = _small_batch(n)
    agent = _with_linear_flow(_known_q_agent(config, batch))
    rng = jax.random.PRNGKey(6)
    x, reference_key = _loss_inputs(agent, batch, rng)
    reference = _linear_flow_reference(batch, reference_key, num_reference, flow_steps)

    sigma = _scott_sigma(_f64(batch['actions']))
    particles_sigma = _scott_sigma(reference.reshape(-1, ACT_DIM))  # what σ would be from the flow's samples
    assert not np.isclose(sigma, particles_sigma, rtol=0.05)
    expected, _ = _expected_actor_loss(x, reference, sigma, beta, prior_score)
    particles_loss, _ = _expected_actor_loss(x, reference, particles_sigma, beta, prior_score)
    assert not np.isclose(expected, particles_loss, rtol=0.05)

    loss, (info, _) = agent._actor_loss(agent.actor.params, batch, rng)
    np.testing.assert_allclose(float(info['bandwidth']), sigma, rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def test_svgd_steps_move_the_samples_in_n_steps_of_phi_over_n():
    n_states, steps, sigma, beta = 3, 3, 0.3, 2.0
    config = FAVConfig(
        hidden_dims=(16, 16), batch_size=n_states, num_samples=4, sigma=sigma, beta=beta, svgd_steps=steps
    )
    batch = _small_batch(n_states)
    agent = _known_q_agent(config, batch)
    rng = jax.random.PRNGKey(5)
    x, _ = _loss_inputs(agent, batch, rng)
    reference = _f64(batch['actions'])[:, None]
    # φ is recomputed at each sub-step's samples (its kernel, KDE score and ∇Q), with the same reference and σ.
    expected, first_phi = _expected_actor_loss(x, reference, sigma, beta, config.prior_score, steps)
    one_move, _ = _expected_actor_loss(x, reference, sigma, beta, config.prior_score)
    assert not np.isclose(expected, one_move, rtol=0.05)  # n steps are not one move of φ

    loss, (info, _) = agent._actor_loss(agent.actor.params, batch, rng)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    # The diagnostics describe the first sub-step: φ at the actor's own samples.
    np.testing.assert_allclose(float(info['residual_before']), np.linalg.norm(first_phi, axis=-1).mean(), rtol=1e-4)


def test_agent_vmaps_over_seeds():
    config = FAVConfig(hidden_dims=(32,), batch_size=64)
    batch = _batch(jax.random.PRNGKey(0))
    agents = jax.vmap(lambda key: FAVAgent.create(key, batch['observations'][:1], batch['actions'][:1], config))(
        jax.random.split(jax.random.PRNGKey(0), 3)
    )
    updated, info = jax.vmap(lambda a: a.update(batch))(agents)
    assert info['critic_loss'].shape == (3,)
    assert len(set(np.asarray(info['critic_loss']).round(6).tolist())) == 3  # seeds differ
    # Each seed's update under vmap is its update alone: nothing is mixed across the run axis.
    for r in range(3):
        alone, alone_info = jax.tree_util.tree_map(lambda x, r=r: x[r], agents).update(batch)
        for got, want in zip(
            jax.tree_util.tree_leaves((updated, info)), jax.tree_util.tree_leaves((alone, alone_info)), strict=True
        ):
            np.testing.assert_allclose(np.asarray(got)[r], np.asarray(want), rtol=1e-5, atol=1e-6)


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
    data_key = jax.random.PRNGKey(1)[None]
    agents, _, finite = trained_offline_chunk(as_group(agent), buffer, data_key, 0, steps, config.batch_size)
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
