"""FQL and IFQL against hand-computed values, the BC flow helpers they share with FAV (flow-matching loss,
Euler sampler) against closed forms, and the agents' runs through the command-line programs."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import fql, ifql
from agents.common import flow_actions, flow_matching_loss
from datasets.buffer import GroupBuffer
from envs.registry import FAMILIES
from launch.compiled import as_group
from tests.agent_helpers import has_layer_norm, trained_offline_chunk
from tests.cli_helpers import SMALL, assert_same_result, launch, run_killed_then_resumed

AGENTS = {'fql': fql, 'ifql': ifql}
LOSSES = {
    'fql': ('critic_loss', 'bc_flow_loss', 'distill_loss', 'actor_loss'),
    'ifql': ('value_loss', 'critic_loss', 'bc_flow_loss'),
}


def _batch(seed=0, n=64, obs_dim=4, act_dim=2):
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return dict(
        observations=jax.random.normal(keys[0], (n, obs_dim)),
        actions=jnp.clip(jax.random.normal(keys[1], (n, act_dim)) * 0.5, -0.99, 0.99),
        next_observations=jax.random.normal(keys[2], (n, obs_dim)),
        rewards=jax.random.normal(keys[3], (n,)),
        masks=jnp.asarray(np.arange(n) % 2, jnp.float32),  # half terminal (0), half not (1)
        terminals=jnp.zeros((n,)),
    )


def _agent(name, batch, seed=1, **settings):
    """A small agent; tests that keep the default settings share one compiled `update` per agent."""
    module = AGENTS[name]
    config = module.Config(**{'hidden_dims': (32, 32), 'batch_size': 64, **settings})
    return module.Agent.create(seed, batch['observations'][:1], batch['actions'][:1], config)


def _scaled(params, factor):
    return jax.tree_util.tree_map(lambda x: x * factor, params)


def _allclose_trees(a, b, **tol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


# ------------------------------------------------------------------------------------------------
# Both agents


@pytest.mark.parametrize('name', ['fql', 'ifql'])
def test_repeated_updates_on_a_fixed_batch_lower_each_loss(name):
    batch = _batch()
    agent = _agent(name, batch)
    infos = []
    for _ in range(300):
        agent, info = agent.update(batch)
        infos.append(info)
    for key in LOSSES[name]:
        losses = np.array([float(info[key]) for info in infos])
        assert losses[-20:].mean() < 0.8 * losses[:20].mean(), (key, losses[:20].mean(), losses[-20:].mean())


@pytest.mark.parametrize('name', ['fql', 'ifql'])
def test_sampled_actions_have_the_right_shape_and_stay_in_bounds(name):
    batch = _batch()
    agent = _agent(name, batch)
    # Large weights push the raw network outputs far past ±1, so the bound has work to do.
    loud = agent.replace(
        **{k: getattr(agent, k).replace(params=_scaled(getattr(agent, k).params, 4.0)) for k in ('critic', 'bc_flow')}
    )
    if name == 'fql':
        loud = loud.replace(actor=agent.actor.replace(params=_scaled(agent.actor.params, 4.0)))
    key = jax.random.PRNGKey(3)
    batched = np.asarray(loud.sample_actions(batch['observations'][:7], key))
    single = np.asarray(loud.sample_actions(batch['observations'][0], key))
    assert batched.shape == (7, 2) and single.shape == (2,)
    assert np.all(np.abs(batched) <= 1.0) and np.all(np.abs(single) <= 1.0)
    assert np.any(np.abs(batched) == 1.0)  # some outputs were clipped


@pytest.mark.parametrize('name', ['fql', 'ifql'])
def test_vmapped_two_seed_update_equals_two_single_seed_updates(name):
    batch = _batch()
    keys = jax.random.split(jax.random.PRNGKey(0), 2)

    def create(key):
        return _agent(name, batch, seed=key)

    together, together_info = jax.jit(jax.vmap(lambda key: create(key).update(batch)))(keys)
    for i in range(2):
        alone, alone_info = create(keys[i]).update(batch)
        _allclose_trees(jax.tree_util.tree_map(lambda x, i=i: x[i], together), alone, rtol=1e-5, atol=1e-6)
        _allclose_trees({k: v[i] for k, v in together_info.items()}, alone_info, rtol=1e-5, atol=1e-6)
    assert not np.isclose(float(together_info['critic_loss'][0]), float(together_info['critic_loss'][1]))


@pytest.mark.parametrize('name', ['fql', 'ifql'])
def test_target_critic_moves_by_tau_toward_the_critic_before_the_step(name):
    batch = _batch()
    agent = _agent(name, batch)
    tau = agent.config.tau
    old_target = _scaled(agent.target_critic_params, 0.5)  # distinct from the critic, so the mix is visible
    updated, _ = agent.replace(target_critic_params=old_target).update(batch)
    # The reference averages in the critic from before the step's update.
    expected = jax.tree_util.tree_map(
        lambda online, old: tau * online + (1 - tau) * old, agent.critic.params, old_target
    )
    _allclose_trees(updated.target_critic_params, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    'name, setting, words',
    [
        ('fql', dict(alpha=-1.0), 'alpha'),
        ('fql', dict(flow_steps=0), 'flow_steps'),
        ('fql', dict(q_agg='max'), 'q_agg'),
        ('fql', dict(tau=0.0), 'tau'),
        ('ifql', dict(expectile=1.0), 'expectile'),
        ('ifql', dict(num_samples=0), 'num_samples'),
        ('ifql', dict(batch_size=1), 'batch_size'),
    ],
)
def test_invalid_settings_name_the_field(name, setting, words):
    with pytest.raises(ValueError, match=words):
        AGENTS[name].get_config(FAMILIES['cube-single-play'], setting)


@pytest.mark.parametrize('name', ['fql', 'ifql'])
def test_actor_layer_norm_reaches_the_bc_flow_and_the_one_step_policy(name):
    # As in the public FQL code, actor_layer_norm is the policy networks' setting: the BC flow's (and FQL's
    # one-step policy's), never the critic's alone.
    batch = _batch()
    plain, normed = (_agent(name, batch, actor_layer_norm=on) for on in (False, True))
    networks = ['bc_flow', 'actor'] if name == 'fql' else ['bc_flow']
    for network in networks:
        assert not has_layer_norm(getattr(plain, network).params), network
        assert has_layer_norm(getattr(normed, network).params), network


def test_fql_alpha_of_zero_is_accepted():
    # α >= 0: α = 0 (no distillation, the Q term alone) is the bound, not a refused setting.
    assert fql.get_config(FAMILIES['cube-single-play'], {'alpha': 0.0}).alpha == 0.0


# ------------------------------------------------------------------------------------------------
# The shared BC flow: its loss and its sampler (agents/common.py)


def _f64(x):
    return np.asarray(x, np.float64)


def test_flow_matching_loss_is_the_mean_squared_velocity_error_at_the_rngs_x0_and_t():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(6, 3)).astype(np.float32)
    actions = rng.uniform(-0.9, 0.9, (6, 2)).astype(np.float32)
    key = jax.random.PRNGKey(4)
    # x_0 ~ N(0, I) from the first of the two keys split from `key`, t ~ U(0, 1) (one per row) from the second.
    noise_key, time_key = jax.random.split(key)
    x0 = _f64(jax.random.normal(noise_key, (6, 2)))
    t = _f64(jax.random.uniform(time_key, (6, 1)))
    a = _f64(actions)
    xt = (1 - t) * x0 + t * a

    def velocity(s, x, tt):  # depends on the state, the point and the time
        return s[..., :2] * tt + 0.5 * x - 0.3

    expected = np.mean((_f64(obs)[:, :2] * t + 0.5 * xt - 0.3 - (a - x0)) ** 2)  # mean over rows and dims
    np.testing.assert_allclose(float(flow_matching_loss(velocity, obs, actions, key)), expected, rtol=1e-5)
    # v = 0: the mean of (a - x_0)², over the batch and the action dimensions (not summed over the latter).
    zero = float(flow_matching_loss(lambda s, x, tt: jnp.zeros_like(x), obs, actions, key))
    np.testing.assert_allclose(zero, np.mean((a - x0) ** 2), rtol=1e-5)
    # The conditional velocity (a - x_t)/(1 - t) = a - x_0 (a passed in as the state) is the exact answer: loss 0.
    exact = float(flow_matching_loss(lambda s, x, tt: (s - x) / (1 - tt), actions, actions, key))
    assert exact < 1e-8 and zero > 0.5


@pytest.mark.parametrize('name', ['fql', 'ifql'])
def test_bc_flow_loss_is_flow_matching_of_the_velocity_network_on_the_batch(name):
    batch = _batch()
    agent = _agent(name, batch)
    key = jax.random.PRNGKey(9)
    noise_key, time_key = jax.random.split(key)
    actions = batch['actions']
    x0 = jax.random.normal(noise_key, actions.shape)
    t = jax.random.uniform(time_key, (64, 1))
    v = _f64(agent.bc_flow.apply_fn(agent.bc_flow.params, batch['observations'], (1 - t) * x0 + t * actions, t))
    loss, info = agent._bc_flow_loss(agent.bc_flow.params, batch, key)
    np.testing.assert_allclose(float(loss), np.mean((v - _f64(actions - x0)) ** 2), rtol=1e-5)
    assert float(info['bc_flow_loss']) == float(loss)


def test_flow_actions_are_euler_steps_from_the_noise_clipped_to_the_box():
    rng = np.random.default_rng(1)
    z = rng.uniform(-0.5, 0.5, (8, 2)).astype(np.float32)
    shift = np.array([[0.2, -0.3], [1.2, -0.9], [-1.4, 0.1], [0.0, 0.4]] * 2, np.float32)  # passed as the state

    # v = c(s) + b·t: N Euler steps at the times i/N, i = 0..N-1, sum to z + c + b(N-1)/(2N) (the ODE's exact
    # z + c + b/2, less Euler's b/(2N)); rows 1 and 2 leave [-1, 1] and are clipped.
    for steps in (1, 10):
        got = flow_actions(lambda s, x, t: s + 0.8 * t, shift, z, steps)
        expected = np.clip(_f64(z) + _f64(shift) + 0.8 * (steps - 1) / (2 * steps), -1, 1)
        np.testing.assert_allclose(_f64(got), expected, rtol=1e-5, atol=1e-6)
    assert np.any(np.abs(expected) == 1) and np.any(np.abs(expected) < 0.99)
    # v = λx: each step multiplies by (1 + λ/N); λ = -1, N = 10: 0.9^10·z ≈ 0.349 z (the ODE's e^-1 z ≈ 0.368 z).
    got = flow_actions(lambda s, x, t: -x, shift, 2.0 * z, 10)
    np.testing.assert_allclose(_f64(got), 0.9**10 * 2.0 * _f64(z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['fql', 'ifql'])
def test_agents_sample_their_flow_with_ten_euler_steps_of_their_network(name):
    batch = _batch()
    agent = _agent(name, batch)
    assert agent.config.flow_steps == 10
    # The velocity network swapped for v(s, x, t) = λx + c·t, its parameters read from the agent's flow:
    # x_N = r^N z + (c/N) Σ_i (i/N) r^(N-1-i), r = 1 + λ/N.
    params = dict(lam=jnp.float32(-0.7), c=jnp.asarray([0.5, -0.4], jnp.float32))
    agent = agent.replace(
        bc_flow=agent.bc_flow.replace(apply_fn=lambda p, s, x, t: p['lam'] * x + p['c'] * t, params=params)
    )
    z = jax.random.normal(jax.random.PRNGKey(2), (5, 2)) * 0.5
    n, r = 10, 1 - 0.7 / 10
    drift = sum((i / n) * r ** (n - 1 - i) for i in range(n)) / n * np.array([0.5, -0.4])
    expected = np.clip(r**n * _f64(z) + drift, -1, 1)
    np.testing.assert_allclose(_f64(agent.flow_actions(batch['observations'][:5], z)), expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# FQL


def _constant_actor(agent, value):
    """The one-step policy with its output layer set to output `value` whatever the state and noise."""
    params = jax.tree_util.tree_map(lambda x: x, agent.actor.params)  # a copy
    layers = params['params']
    last = max(layers, key=lambda n: int(n.split('_')[1]))
    layers[last] = dict(kernel=jnp.zeros_like(layers[last]['kernel']), bias=jnp.asarray(value, jnp.float32))
    return agent.replace(actor=agent.actor.replace(params=params))


@pytest.mark.parametrize(
    'family, discount, q_agg', [('antmaze-giant-navigate', 0.995, 'min'), ('cube-single-play', 0.99, 'mean')]
)
def test_fql_critic_loss_matches_the_hand_computed_td_target(family, discount, q_agg):
    config = fql.get_config(FAMILIES[family], dict(hidden_dims=(32, 32), batch_size=64))
    assert (config.discount, config.q_agg) == (discount, q_agg)
    batch = _batch()
    agent = fql.Agent.create(1, batch['observations'][:1], batch['actions'][:1], config)
    agent = _constant_actor(agent, [0.3, -2.0]).replace(target_critic_params=_scaled(agent.target_critic_params, 1.5))
    loss, _ = agent._critic_loss(agent.critic.params, batch, jax.random.PRNGKey(5))

    apply = agent.critic.apply_fn
    next_actions = np.tile([0.3, -1.0], (64, 1))  # the policy's output, clipped to [-1, 1]
    next_qs = np.asarray(apply(agent.target_critic_params, batch['next_observations'], next_actions))  # (2, B)
    assert not np.allclose(next_qs[0], next_qs[1])  # members differ, so min and mean differ
    next_q = next_qs.min(0) if q_agg == 'min' else next_qs.mean(0)
    target = np.asarray(batch['rewards']) + discount * np.asarray(batch['masks']) * next_q
    qs = np.asarray(apply(agent.critic.params, batch['observations'], batch['actions']))
    np.testing.assert_allclose(float(loss), np.mean((qs - target) ** 2), rtol=1e-5)


def test_fql_actor_loss_matches_distillation_and_q_terms():
    batch = _batch()
    for normalize in (False, True):
        agent = _agent('fql', batch, alpha=3.0, normalize_q_loss=normalize)
        # A one-step policy whose raw outputs leave the box, so that Q must be taken at the clipped actions; a
        # target critic unlike the critic, so that Q must be the online critic's.
        agent = agent.replace(
            actor=agent.actor.replace(params=_scaled(agent.actor.params, 3.0)),
            target_critic_params=_scaled(agent.critic.params, 1.5),
        )
        key = jax.random.PRNGKey(7)
        loss, info = agent._actor_loss(agent.actor.params, batch, key)
        obs = batch['observations']
        noises = jax.random.normal(key, (64, 2))
        raw = np.asarray(agent.actor.apply_fn(agent.actor.params, jnp.concatenate([obs, noises], -1)))
        flow = np.asarray(agent.flow_actions(obs, noises))
        q = np.asarray(agent.critic.apply_fn(agent.critic.params, obs, np.clip(raw, -1, 1))).mean(0)
        q_term = -q.mean() / (np.abs(q).mean() if normalize else 1.0)
        assert np.abs(raw).max() > 1.0  # some raw actions are outside [-1, 1]
        np.testing.assert_allclose(float(info['distill_loss']), np.mean((raw - flow) ** 2), rtol=1e-5)
        np.testing.assert_allclose(float(loss), 3.0 * np.mean((raw - flow) ** 2) + q_term, rtol=1e-5)
    # With normalize_q_loss (the last setting above), λ = 1 / E|Q| is a constant of the gradient (FQL's
    # stop-gradient): compare with the gradient of the loss written out with λ a plain number. With a gradient
    # through λ, -mean(Q)/mean|Q| is ±1 wherever Q has one sign, and the Q term would push the policy nowhere.
    assert normalize
    scale = float(1.0 / np.abs(q).mean())

    def written_out(params):
        actions = agent.actor.apply_fn(params, jnp.concatenate([obs, noises], -1))
        q = agent.critic.apply_fn(agent.critic.params, obs, jnp.clip(actions, -1.0, 1.0)).mean(0)
        return 3.0 * jnp.mean((actions - flow) ** 2) - scale * q.mean()

    grads = jax.grad(lambda p: agent._actor_loss(p, batch, key)[0])(agent.actor.params)
    _allclose_trees(grads, jax.grad(written_out)(agent.actor.params), rtol=1e-4, atol=1e-6)


def test_fql_bc_flow_reproduces_a_bimodal_behavior():
    n = 2048
    rng = np.random.default_rng(0)
    modes = np.where(np.arange(n) % 2 == 0, -0.6, 0.6)
    actions = (modes + rng.normal(0, 0.05, n)).astype(np.float32)[:, None]
    buffer = GroupBuffer.of_one_task(
        dict(
            observations=np.ones((n, 1), np.float32),
            actions=actions,
            next_observations=np.ones((n, 1), np.float32),
            rewards=np.zeros(n, np.float32),
            masks=np.zeros(n, np.float32),
            terminals=np.ones(n, np.float32),
        )
    )
    config = fql.FQLConfig(hidden_dims=(32, 32), batch_size=128, lr=2e-3)
    agent = fql.Agent.create(0, np.ones((1, 1), np.float32), actions[:1], config)
    agents, _, finite = trained_offline_chunk(as_group(agent), buffer, jax.random.PRNGKey(1)[None], 0, 1000, 128)
    assert bool(finite[0])
    agent = jax.tree_util.tree_map(lambda x: x[0], agents)
    sampled = np.asarray(agent.flow_actions(jnp.ones((4000, 1)), jax.random.normal(jax.random.PRNGKey(2), (4000, 1))))[
        :, 0
    ]
    low, high = sampled[sampled < 0], sampled[sampled >= 0]
    assert abs(len(low) / len(sampled) - 0.5) < 0.1  # both modes, in their proportions
    assert abs(np.median(low) + 0.6) < 0.1 and abs(np.median(high) - 0.6) < 0.1
    assert np.mean(np.abs(sampled) < 0.3) < 0.1  # little mass between the modes


def test_fql_defaults_are_the_public_fql_codes():
    # The FQL paper's runs: 4 × 512 networks, LayerNorm in the critic only, 2 critics, Adam 3e-4, batch 256,
    # γ = 0.99, τ = 0.005, mean target, 10 Euler steps, and no 1/|Q| normalization of the Q term.
    expected = dict(
        lr=3e-4,
        batch_size=256,
        hidden_dims=(512, 512, 512, 512),
        actor_layer_norm=False,
        critic_layer_norm=True,
        num_qs=2,
        discount=0.99,
        tau=0.005,
        q_agg='mean',
        flow_steps=10,
        normalize_q_loss=False,
    )
    config = fql.get_config(FAMILIES['cube-double-play'])
    assert {k: getattr(config, k) for k in expected} == expected


def test_fql_alpha_per_environment_offline_and_o2o():
    expected = {
        'antmaze-large-navigate': (10, 10),
        'humanoidmaze-medium-navigate': (30, 100),
        'humanoidmaze-large-navigate': (30, 30),
        'antsoccer-arena-navigate': (10, 30),
        'cube-single-play': (300, 300),
        'scene-play': (300, 300),
        'puzzle-4x4-play': (1000, 1000),
        'antmaze-medium-play-v2': (10, 10),
        'antmaze-large-diverse-v2': (3, 3),
    }
    for family, (offline, o2o) in expected.items():
        assert fql.get_config(FAMILIES[family]).alpha == offline, family
        assert fql.get_config(FAMILIES[family], mode='o2o').alpha == o2o, family
    assert set(fql.OFFLINE_ALPHA) == set(FAMILIES)  # every environment has its α
    assert fql.get_config(FAMILIES['scene-play'], {'alpha': 5.0}, mode='o2o').alpha == 5.0


# ------------------------------------------------------------------------------------------------
# IFQL


def test_ifql_value_and_critic_losses_match_hand_computation():
    config = ifql.get_config(FAMILIES['humanoidmaze-medium-navigate'], dict(hidden_dims=(32, 32), expectile=0.7))
    assert (config.discount, config.num_samples) == (0.995, 32)
    batch = _batch()
    agent = ifql.Agent.create(1, batch['observations'][:1], batch['actions'][:1], config)
    agent = agent.replace(target_critic_params=_scaled(agent.target_critic_params, 1.5))
    obs, actions = batch['observations'], batch['actions']

    value_loss, _ = agent._value_loss(agent.value.params, batch)
    target_qs = np.asarray(agent.critic.apply_fn(agent.target_critic_params, obs, actions))
    assert not np.allclose(target_qs[0], target_qs[1])
    u = target_qs.min(0) - np.asarray(agent.value.apply_fn(agent.value.params, obs))
    assert (u > 0).any() and (u < 0).any()  # both sides of the asymmetric weight are exercised
    np.testing.assert_allclose(float(value_loss), np.mean(np.where(u >= 0, 0.7, 0.3) * u**2), rtol=1e-5)

    critic_loss, _ = agent._critic_loss(agent.critic.params, batch)
    next_v = np.asarray(agent.value.apply_fn(agent.value.params, batch['next_observations']))
    target = np.asarray(batch['rewards']) + 0.995 * np.asarray(batch['masks']) * next_v
    qs = np.asarray(agent.critic.apply_fn(agent.critic.params, obs, actions))
    np.testing.assert_allclose(float(critic_loss), np.sum(np.mean((qs - target) ** 2, axis=1)), rtol=1e-5)


def test_ifql_acts_with_the_highest_q_of_its_flow_samples():
    batch = _batch()
    agent, _ = _agent('ifql', batch).update(batch)
    # A target critic unlike the critic (one update leaves them nearly equal): acting scores with the critic.
    agent = agent.replace(target_critic_params=_agent('ifql', batch, seed=2).critic.params)
    n = agent.config.num_samples
    obs = batch['observations'][:5]
    key = jax.random.PRNGKey(11)
    # The same N samples, drawn and scored explicitly.
    repeated = jnp.repeat(obs[:, None], n, axis=1)
    samples = np.asarray(agent.flow_actions(repeated, jax.random.normal(key, (5, n, 2))))
    qs = np.asarray(agent.critic.apply_fn(agent.critic.params, repeated, samples)).min(0)
    best = qs.argmax(1)
    assert len(set(best.tolist())) > 1  # not simply one fixed index
    target_qs = np.asarray(agent.critic.apply_fn(agent.target_critic_params, repeated, samples)).min(0)
    assert (target_qs.argmax(1) != best).any()  # the target critic would pick other samples
    np.testing.assert_allclose(np.asarray(agent.sample_actions(obs, key)), samples[np.arange(5), best], atol=1e-6)
    single = np.asarray(agent.sample_actions(obs[2], key))
    single_samples = np.asarray(agent.flow_actions(repeated[2], jax.random.normal(key, (n, 2))))
    single_qs = np.asarray(agent.critic.apply_fn(agent.critic.params, repeated[2], single_samples)).min(0)
    np.testing.assert_allclose(single, single_samples[single_qs.argmax()], atol=1e-6)


def test_ifql_update_trains_the_flow_with_a_fresh_key():
    # The update splits its key in two: it carries the first and draws the flow-matching x_0 and t from the
    # second (reusing the carried key there would correlate each update's draws with the next one's).
    batch = _batch()
    agent = _agent('ifql', batch)
    next_rng, flow_key = jax.random.split(agent.rng)
    expected, _ = agent._bc_flow_loss(agent.bc_flow.params, batch, flow_key)
    assert not np.isclose(float(expected), float(agent._bc_flow_loss(agent.bc_flow.params, batch, agent.rng)[0]))
    updated, info = agent.update(batch)
    np.testing.assert_allclose(float(info['bc_flow_loss']), float(expected), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(updated.rng), np.asarray(next_rng))


def test_fql_update_draws_each_loss_from_its_own_key():
    # The update splits its key in four: it carries the first, and the critic's next actions, the flow-matching
    # x_0 and t, and the one-step policy's noises use the second, third and fourth (a key shared by two of
    # them would correlate their draws).
    batch = _batch()
    agent = _agent('fql', batch)
    next_rng, critic_key, flow_key, actor_key = jax.random.split(agent.rng, 4)
    losses = {
        'critic_loss': lambda key: agent._critic_loss(agent.critic.params, batch, key)[0],
        'bc_flow_loss': lambda key: agent._bc_flow_loss(agent.bc_flow.params, batch, key)[0],
        'actor_loss': lambda key: agent._actor_loss(agent.actor.params, batch, key)[0],
    }
    keys = {'critic_loss': critic_key, 'bc_flow_loss': flow_key, 'actor_loss': actor_key}
    updated, info = agent.update(batch)
    for name, loss in losses.items():
        expected = float(loss(keys[name]))
        for other in keys.values():
            if other is not keys[name]:
                assert not np.isclose(expected, float(loss(other)), rtol=1e-4), name
        np.testing.assert_allclose(float(info[name]), expected, rtol=1e-5, err_msg=name)
    np.testing.assert_array_equal(np.asarray(updated.rng), np.asarray(next_rng))


def test_ifql_settings_per_environment():
    assert ifql.get_config(FAMILIES['antmaze-giant-navigate']).discount == 0.995
    assert ifql.get_config(FAMILIES['cube-double-play'], mode='o2o').num_samples == 32
    assert ifql.get_config(FAMILIES['cube-double-play'], {'num_samples': 8}).num_samples == 8
    assert dataclasses.replace(ifql.get_config(FAMILIES['scene-play']), expectile=0.8).validate().expectile == 0.8
    # The public FQL code's IFQL defaults (32 samples), the same in every environment, offline and O2O.
    for family in FAMILIES.values():
        for mode in ('offline', 'o2o'):
            config = ifql.get_config(family, mode=mode)
            assert (config.num_samples, config.expectile, config.flow_steps) == (32, 0.9, 10), family.name
            assert (config.lr, config.batch_size, config.hidden_dims, config.tau) == (3e-4, 256, (512,) * 4, 0.005)


# ------------------------------------------------------------------------------------------------
# Through the command-line programs


@pytest.mark.parametrize('name, setting', [('fql', '--agent.alpha=-1'), ('ifql', '--agent.expectile=2')])
def test_invalid_setting_on_the_command_line_writes_nothing(name, setting, tmp_path):
    result = launch(
        'o2o', '--env', 'cube-single', '--agent', name, setting, '--run-dir', str(tmp_path / 'r'), timeout=120
    )
    assert result.returncode == 2
    assert setting.split('=')[0][len('--agent.') :] in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / 'r').exists()


@pytest.mark.slow
@pytest.mark.parametrize('name', ['fql', 'ifql'])
def test_o2o_run_killed_and_resumed_gives_the_same_result(name, dataset, tmp_path):
    args = ['--env', 'cube-single', '--task', '1', '--agent', name, '--dataset', dataset, *SMALL]
    args += '--offline-steps 100 --online-steps 100 --eval-every 100 --save-every 25 --log-every 25'.split()
    args += [
        '--updates-per-call',
        '25',
        '--eval-envs',
        '1',
        '--agent.num_samples=4' if name == 'ifql' else '--agent.alpha=3',
    ]
    whole = str(tmp_path / 'whole')
    result = launch('o2o', *args, '--run-dir', whole)
    assert result.returncode == 0, result.stderr
    final = json.loads(Path(whole, 'final.json').read_text())
    assert final['agent'] == name and final['steps'] == 200 and 0 <= final['online_score'] <= 100
    config = json.loads(Path(whole, 'config.json').read_text())['agent_config']
    assert config['num_samples' if name == 'ifql' else 'alpha'] == (4 if name == 'ifql' else 3)
    header = Path(whole, 'train.csv').read_text().splitlines()[0]
    assert all(key in header for key in LOSSES[name])

    killed = str(tmp_path / 'killed')
    run_killed_then_resumed('o2o', args, killed, kill_after_step=150)  # mid-episode, in the online phase
    assert_same_result(whole, killed)
