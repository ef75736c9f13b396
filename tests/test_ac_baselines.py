"""IQL, ReBRAC and SAC/RLPD against hand-computed answers, and balanced (RLPD) sampling."""

import dataclasses
import json
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from agents import AGENTS, iql, rebrac, sac
from agents.common import expectile_loss, gaussian_log_prob, tanh_log_det
from agents.networks import MLP, GaussianActor
from datasets.buffer import GroupBuffer, ReplayBuffer
from envs.registry import FAMILIES
from launch.compiled import as_group, online_chunk
from tests.agent_helpers import has_layer_norm
from tests.cli_helpers import SMALL, assert_same_result, launch, run_killed_then_resumed

MODULES = {'iql': iql, 'rebrac': rebrac, 'sac': sac}
SMALL_NETS = dict(hidden_dims=(16,), batch_size=16)  # one hidden layer: quick to compile


def _batch(seed=0, n=16, obs_dim=4, act_dim=2):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    actions = jnp.clip(0.4 * jax.random.normal(keys[1], (n, act_dim)), -0.99, 0.99)
    return dict(
        observations=jax.random.normal(keys[0], (n, obs_dim)),
        actions=actions,
        next_observations=jax.random.normal(keys[2], (n, obs_dim)),
        rewards=jax.random.normal(keys[3], (n,)),
        masks=(jnp.arange(n) % 2).astype(jnp.float32),  # half terminal (0), half not (1)
        terminals=jnp.zeros((n,)),
        next_actions=jnp.roll(actions, -1, axis=0),
    )


def _agent(name, seed=0, **overrides):
    config = MODULES[name].Config(**{**SMALL_NETS, **overrides})
    batch = _batch()
    return MODULES[name].Agent.create(seed, batch['observations'][:1], batch['actions'][:1], config)


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]


def _scaled(params, factor):
    return jax.tree_util.tree_map(lambda x: x * factor, params)


# ------------------------------------------------------------------------------------------------
# Behavior every agent shares


def _actor_loss(agent, actor_params, batch):
    if isinstance(agent, sac.Agent):  # a sampled loss: its mean over many noise draws
        keys = jax.random.split(jax.random.PRNGKey(5), 256)
        return float(jax.vmap(lambda key: agent._actor_loss(actor_params, batch, key)[0])(keys).mean())
    return float(agent._actor_loss(actor_params, batch)[0])


@pytest.mark.parametrize(
    'name, critic_losses',
    [('iql', ['value_loss', 'critic_loss']), ('rebrac', ['critic_loss']), ('sac', ['critic_loss'])],
)
def test_repeated_updates_on_a_fixed_batch_lower_each_loss(name, critic_losses):
    start, batch = _agent(name, lr=1e-3, discount=0.5), _batch()
    trained, infos = jax.jit(lambda a: jax.lax.scan(lambda a, _: a.update(batch), a, None, length=150))(start)
    for key in critic_losses:
        first, last = float(infos[key][:10].mean()), float(infos[key][-10:].mean())
        assert last < first, (key, first, last)
    # The actor's objective moves with the critic, so compare actors under the trained critic.
    assert _actor_loss(trained, trained.actor.params, batch) < _actor_loss(trained, start.actor.params, batch)


@pytest.mark.parametrize('name', sorted(MODULES))
def test_actions_have_the_right_shape_and_lie_in_the_box(name):
    agent = _agent(name)
    observations = 50.0 * _batch()['observations']  # far out: the raw policy outputs leave [-1, 1]
    key = jax.random.PRNGKey(3)
    for act in (agent.sample_actions, agent.eval_actions):
        batched, single = act(observations, key), act(observations[0], key)
        assert batched.shape == (16, 2) and single.shape == (2,)
        assert float(jnp.abs(batched).max()) <= 1.0 and float(jnp.abs(single).max()) <= 1.0
    # Evaluation is deterministic; online data collection explores.
    other = jax.random.PRNGKey(4)
    np.testing.assert_array_equal(agent.eval_actions(observations, key), agent.eval_actions(observations, other))
    assert not np.allclose(agent.sample_actions(observations, key), agent.sample_actions(observations, other))


@pytest.mark.parametrize('name', sorted(MODULES))
def test_vmapped_two_seed_update_equals_two_single_seed_updates(name):
    config = MODULES[name].Config(**SMALL_NETS)
    batch = _batch()
    keys = jax.random.split(jax.random.PRNGKey(0), 2)

    def create_and_update(key):
        agent = MODULES[name].Agent.create(key, batch['observations'][:1], batch['actions'][:1], config)
        if name == 'rebrac':
            agent = agent.replace(updates=agent.updates + 1)  # so that this update moves the actor too
        return agent.update(batch)

    vmapped, vmapped_info = jax.jit(jax.vmap(create_and_update))(keys)
    single_run = jax.jit(create_and_update)
    for i, key in enumerate(keys):
        single, single_info = single_run(key)
        column = jax.tree_util.tree_map(lambda x, i=i: x[i], vmapped)
        for a, b in zip(_leaves(single), _leaves(column), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert np.isclose(float(single_info['critic_loss']), float(vmapped_info['critic_loss'][i]), rtol=1e-5)
    assert not np.isclose(float(vmapped_info['critic_loss'][0]), float(vmapped_info['critic_loss'][1]))


@pytest.mark.parametrize(
    'name, target_field, setting, value',
    [
        ('iql', 'expectile', 'expectile', 1.0),
        ('iql', 'alpha', 'alpha', -1.0),
        ('iql', 'tau', 'tau', 0.0),
        ('rebrac', 'alpha_actor', 'alpha_actor', -1.0),
        ('rebrac', 'alpha_critic', 'alpha_critic', -0.1),
        ('rebrac', 'actor_freq', 'actor_freq', 0),
        ('rebrac', 'actor_noise_clip', 'actor_noise_clip', -1.0),
        ('sac', 'q_agg', 'q_agg', 'max'),
        ('sac', 'initial_temperature', 'initial_temperature', 0.0),
        ('sac', 'target_entropy_multiplier', 'target_entropy_multiplier', -1.0),
        ('sac', 'num_qs', 'num_qs', 0),
    ],
)
def test_invalid_settings_raise_naming_the_field(name, target_field, setting, value):
    with pytest.raises(ValueError, match=f'agent.{target_field} '):
        MODULES[name].get_config(FAMILIES['cube-single-play'], {setting: value})


def test_sac_target_entropy_multiplier_of_zero_is_accepted():
    # multiplier >= 0: 0 (a target entropy of 0 nats) is the bound, not a refused setting.
    config = sac.get_config(FAMILIES['cube-single-play'], {'target_entropy_multiplier': 0.0})
    assert config.target_entropy_multiplier == 0.0
    assert _agent('sac', target_entropy_multiplier=0.0).target_entropy == 0.0


def test_iql_alpha_of_zero_is_accepted():
    # α >= 0: α = 0 (every AWR weight 1, plain behavior cloning) is the bound, not a refused setting.
    assert iql.get_config(FAMILIES['cube-single-play'], {'alpha': 0.0}).alpha == 0.0


def test_tau_of_one_is_accepted_and_copies_the_critic_into_the_target():
    # τ ∈ (0, 1]: at τ = 1 the target is the critic of before the step (a hard copy), not a refused setting.
    for module in MODULES.values():
        assert module.get_config(FAMILIES['cube-single-play'], {'tau': 1.0}).tau == 1.0
    agent = _agent('sac', tau=1.0)
    agent = agent.replace(target_critic_params=_scaled(agent.critic.params, -1.0))
    new, _ = agent.update(_batch())
    for target, online in zip(_leaves(new.target_critic_params), _leaves(agent.critic.params), strict=True):
        np.testing.assert_allclose(target, online, rtol=1e-6, atol=1e-7)


def test_per_environment_settings_cover_every_family_and_reach_the_config():
    for table in (iql.AWR_ALPHA, rebrac.BC_COEFFICIENTS):
        assert set(table) == set(FAMILIES)
    humanoid = FAMILIES['humanoidmaze-medium-navigate']  # FQL's public commands for this environment
    assert (iql.get_config(humanoid).alpha, iql.get_config(humanoid).discount) == (10.0, 0.995)
    config = rebrac.get_config(humanoid, mode='o2o')
    assert (config.alpha_actor, config.alpha_critic, config.discount) == (0.01, 0.01, 0.995)
    # Rows whose two BC coefficients differ, so that they reach the config each in its own field.
    cube = rebrac.get_config(FAMILIES['cube-double-play'])
    assert (cube.alpha_actor, cube.alpha_critic) == (0.1, 0.0)  # the table's one critic without a BC term
    antmaze = rebrac.get_config(FAMILIES['antmaze-large-navigate'], mode='o2o')
    assert (antmaze.alpha_actor, antmaze.alpha_critic) == (0.003, 0.01)
    assert sac.get_config(humanoid).discount == 0.995 and sac.get_config(humanoid).q_agg == 'min'
    assert iql.get_config(FAMILIES['cube-single-play'], {'alpha': 3.0}).alpha == 3.0


@pytest.mark.parametrize('name', sorted(AGENTS))
def test_every_agents_critic_takes_its_first_adam_step_at_the_configured_learning_rate(name):
    """Adam's first step moves each parameter by lr · g/(|g| + ε): by lr wherever the gradient is not tiny. An
    optimizer built with another rate than agent.lr (a default, say) would move the critic by that one."""
    batch = _batch()
    for lr in (1e-3, 4e-3):
        config = AGENTS[name].Config(hidden_dims=(16,), batch_size=16, lr=lr)
        agent = AGENTS[name].Agent.create(0, batch['observations'][:1], batch['actions'][:1], config)
        updated, _ = agent.update(batch)
        after, before = _leaves(updated.critic.params), _leaves(agent.critic.params)
        moves = [np.abs(a - b).max() for a, b in zip(after, before, strict=True)]
        assert max(moves) == pytest.approx(lr, rel=0.01), (lr, moves)


def test_iql_rebrac_and_sac_defaults_are_the_public_fql_codes():
    """The settings the per-environment tables leave alone, as the public FQL code's get_config sets them
    (iql.py, rebrac.py, sac.py), and RLPD's LayerNorm critic ensemble."""
    shared = dict(
        lr=3e-4, batch_size=256, hidden_dims=(512, 512, 512, 512), actor_layer_norm=False, critic_layer_norm=True
    )
    shared.update(num_qs=2, tau=0.005)
    family = FAMILIES['cube-double-play']
    for name, own in [
        ('iql', dict(expectile=0.9)),
        ('rebrac', dict(actor_freq=2, actor_noise=0.2, actor_noise_clip=0.5)),
        ('sac', dict(q_agg='min', target_entropy_multiplier=0.5, initial_temperature=1.0)),
    ]:
        config = dataclasses.asdict(MODULES[name].get_config(family, mode='o2o'))
        expected = {**shared, **own, 'discount': 0.99}
        assert {k: config[k] for k in expected} == expected, name


def test_rlpd_is_sac_with_balanced_batches_and_no_offline_phase():
    """RLPD (docs/agents.md): SAC trained online from scratch (no offline steps), batches half offline data."""
    from launch.settings import agent_module, parse_args

    args = parse_args(['--env', 'cube-double', '--agent', 'rlpd'], 'o2o')
    assert (args.offline_steps, args.balanced_sampling) == (0, True)
    assert agent_module(args.agent) is sac
    # Its own value, as the help spells RLPD out, is accepted; any other offline phase is refused.
    assert parse_args(['--env', 'cube-double', '--agent', 'rlpd', '--offline-steps', '0'], 'o2o').offline_steps == 0
    plain = parse_args(['--env', 'cube-double', '--agent', 'sac'], 'o2o')  # SAC itself keeps the defaults
    assert (plain.offline_steps, plain.balanced_sampling) == (1_000_000, False)


# ------------------------------------------------------------------------------------------------
# Critic targets and target networks, by hand


def test_iql_losses_match_the_formulas():
    config = iql.get_config(FAMILIES['humanoidmaze-medium-navigate'], SMALL_NETS)  # γ = 0.995 from the registry
    agent, batch = _agent('iql', **dataclasses.asdict(config)), _batch()
    agent = agent.replace(target_critic_params=_scaled(agent.critic.params, 1.5))  # target ≠ online critic
    s, a, s2 = batch['observations'], batch['actions'], batch['next_observations']
    v_next = agent.value.apply_fn(agent.value.params, s2)
    y = batch['rewards'] + 0.995 * batch['masks'] * v_next
    q = agent.critic.apply_fn(agent.critic.params, s, a)
    expected = np.mean(np.sum((np.asarray(q) - np.asarray(y)) ** 2, axis=0))
    assert np.isclose(float(agent._critic_loss(agent.critic.params, batch)[0]), expected, rtol=1e-5)
    # Terminal transitions (mask 0) back up the reward alone.
    terminal = {**batch, 'masks': jnp.zeros(16)}
    expected = np.mean(np.sum((np.asarray(q) - np.asarray(batch['rewards'])) ** 2, axis=0))
    assert np.isclose(float(agent._critic_loss(agent.critic.params, terminal)[0]), expected, rtol=1e-5)
    # Value: the expectile loss of min over the *target* critic minus V.
    q_target = np.asarray(agent.critic.apply_fn(agent.target_critic_params, s, a)).min(0)
    u = q_target - np.asarray(agent.value.apply_fn(agent.value.params, s))
    expected = np.mean(np.where(u >= 0, config.expectile, 1 - config.expectile) * u**2)
    assert np.isclose(float(agent._value_loss(agent.value.params, batch)[0]), expected, rtol=1e-5)


@pytest.mark.parametrize('q_agg', ['min', 'mean'])
def test_sac_critic_target_by_hand(q_agg):
    config = sac.get_config(FAMILIES['antsoccer-arena-navigate'], {**SMALL_NETS, 'q_agg': q_agg})  # γ = 0.995
    agent, batch, key = _agent('sac', **dataclasses.asdict(config)), _batch(), jax.random.PRNGKey(7)
    agent = agent.replace(target_critic_params=_scaled(agent.critic.params, 1.5))
    mean, log_std = agent.actor.apply_fn(agent.actor.params, batch['next_observations'])
    next_actions = np.tanh(mean + np.exp(log_std) * jax.random.normal(key, mean.shape))
    next_qs = np.asarray(agent.critic.apply_fn(agent.target_critic_params, batch['next_observations'], next_actions))
    assert np.abs(next_qs[0] - next_qs[1]).min() > 1e-4  # the members differ, so min ≠ mean
    next_q = next_qs.min(0) if q_agg == 'min' else next_qs.mean(0)
    y = np.asarray(batch['rewards']) + 0.995 * np.asarray(batch['masks']) * next_q
    q = np.asarray(agent.critic.apply_fn(agent.critic.params, batch['observations'], batch['actions']))
    loss = float(agent._critic_loss(agent.critic.params, batch, key)[0])
    assert np.isclose(loss, np.mean((q - y) ** 2), rtol=1e-5)


def test_rebrac_critic_target_by_hand():
    config = rebrac.get_config(FAMILIES['puzzle-3x3-play'], {**SMALL_NETS, 'alpha_critic': 0.7})
    agent, batch, key = _agent('rebrac', **dataclasses.asdict(config)), _batch(), jax.random.PRNGKey(7)
    agent = agent.replace(
        target_actor_params=_scaled(agent.actor.params, 30.0), target_critic_params=_scaled(agent.critic.params, 1.5)
    )
    s2 = batch['next_observations']
    target_policy = np.tanh(np.asarray(agent.actor.apply_fn(agent.target_actor_params, s2)[0]))
    noise = np.clip(0.2 * np.asarray(jax.random.normal(key, target_policy.shape)), -0.5, 0.5)
    next_actions = np.clip(target_policy + noise, -1, 1)
    next_q = np.asarray(agent.critic.apply_fn(agent.target_critic_params, s2, next_actions)).min(0)
    next_q -= 0.7 * np.sum((next_actions - np.asarray(batch['next_actions'])) ** 2, -1)
    y = np.asarray(batch['rewards']) + 0.99 * np.asarray(batch['masks']) * next_q
    q = np.asarray(agent.critic.apply_fn(agent.critic.params, batch['observations'], batch['actions']))
    loss = float(agent._critic_loss(agent.critic.params, batch, key)[0])
    assert np.isclose(loss, np.mean((q - y) ** 2), rtol=1e-5)


def test_rebrac_smoothing_and_exploration_noise_are_clipped_by_hand():
    # σ = 0.6 and clip c = 0.3: most draws of σ·ε pass the clip, so a missing clip (or one before the scaling) shows.
    agent, batch, key = _agent('rebrac', actor_noise=0.6, actor_noise_clip=0.3), _batch(), jax.random.PRNGKey(7)
    # Targets unlike the online networks: the agent acts with its online actor, and only the TD target smooths
    # the target actor's action.
    agent = agent.replace(
        target_actor_params=_scaled(agent.actor.params, 30.0), target_critic_params=_scaled(agent.critic.params, 1.5)
    )
    s2 = batch['next_observations']
    raw = 0.6 * np.asarray(jax.random.normal(key, (16, 2)), np.float64)
    assert np.mean(np.abs(raw) > 0.3) > 0.4
    noise = np.clip(raw, -0.3, 0.3)
    # Exploration: the actor's action plus the clipped noise, in the box; evaluation: the actor's action alone.
    policy = np.tanh(np.asarray(agent.actor.apply_fn(agent.actor.params, s2)[0], np.float64))
    np.testing.assert_allclose(np.asarray(agent.sample_actions(s2, key)), np.clip(policy + noise, -1, 1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(agent.eval_actions(s2, key)), policy, atol=1e-6)
    # Target policy smoothing: the target actor's action plus the same clipped noise (α_critic = 0 here).
    target_policy = np.tanh(np.asarray(agent.actor.apply_fn(agent.target_actor_params, s2)[0], np.float64))
    assert np.abs(target_policy - policy).max() > 0.1
    next_actions = np.clip(target_policy + noise, -1, 1).astype(np.float32)
    next_q = np.asarray(agent.critic.apply_fn(agent.target_critic_params, s2, next_actions), np.float64).min(0)
    y = np.asarray(batch['rewards']) + 0.99 * np.asarray(batch['masks']) * next_q
    q = np.asarray(agent.critic.apply_fn(agent.critic.params, batch['observations'], batch['actions']), np.float64)
    loss = float(agent._critic_loss(agent.critic.params, batch, key)[0])
    assert np.isclose(loss, np.mean((q - y) ** 2), rtol=1e-5)


def test_rebrac_update_draws_its_target_noise_from_a_fresh_key():
    # The update splits its key in two: it carries the first and draws the critic's smoothing noise from the
    # second (the same key for both would correlate this update's noise with every later one).
    agent, batch = _agent('rebrac'), _batch()
    next_rng, critic_key = jax.random.split(agent.rng)
    expected = float(agent._critic_loss(agent.critic.params, batch, critic_key)[0])
    assert expected != pytest.approx(float(agent._critic_loss(agent.critic.params, batch, agent.rng)[0]), rel=1e-4)
    new, info = agent.update(batch)
    assert float(info['critic_loss']) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(np.asarray(new.rng), np.asarray(next_rng))


def test_sac_update_draws_the_critics_and_the_actors_noise_from_their_own_keys():
    # The update splits its key in three: it carries the first, the critic's next actions use the second and
    # the actor's samples the third (one key for both would reuse the actor's noise for the TD target).
    agent, batch = _agent('sac'), _batch()
    next_rng, critic_key, actor_key = jax.random.split(agent.rng, 3)
    critic_loss = float(agent._critic_loss(agent.critic.params, batch, critic_key)[0])
    actor_loss = float(agent._actor_loss(agent.actor.params, batch, actor_key)[0])
    assert critic_loss != pytest.approx(float(agent._critic_loss(agent.critic.params, batch, actor_key)[0]), rel=1e-4)
    assert actor_loss != pytest.approx(float(agent._actor_loss(agent.actor.params, batch, critic_key)[0]), rel=1e-4)
    new, info = agent.update(batch)
    assert float(info['critic_loss']) == pytest.approx(critic_loss, rel=1e-5)
    assert float(info['actor_loss']) == pytest.approx(actor_loss, rel=1e-5, abs=1e-6)
    np.testing.assert_array_equal(np.asarray(new.rng), np.asarray(next_rng))


@pytest.mark.parametrize('name', ['iql', 'sac'])
def test_target_critic_is_polyak_average_after_one_update(name):
    agent = _agent(name, tau=0.3)
    agent = agent.replace(target_critic_params=_scaled(agent.critic.params, -1.0))  # old target ≠ critic
    new, _ = agent.update(_batch())
    # The reference averages in the critic from before the step's update (the one the step started from).
    for target, online, old in zip(
        _leaves(new.target_critic_params),
        _leaves(agent.critic.params),
        _leaves(agent.target_critic_params),
        strict=True,
    ):
        np.testing.assert_allclose(target, 0.3 * online + 0.7 * old, rtol=1e-5, atol=1e-7)
    moved = zip(_leaves(new.critic.params), _leaves(agent.critic.params), strict=True)
    assert max(np.abs(a - b).max() for a, b in moved) > 0  # the critic did move


def test_rebrac_actor_and_targets_move_every_second_update():
    agent, batch = _agent('rebrac', tau=0.3), _batch()
    first, info = agent.update(batch)
    assert float(info['actor_updated']) == 0.0
    for a, b in zip(_leaves(first.actor.params), _leaves(agent.actor.params), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(first.target_critic_params), _leaves(agent.target_critic_params), strict=True):
        np.testing.assert_array_equal(a, b)
    second, info = first.update(batch)
    assert float(info['actor_updated']) == 1.0 and int(second.updates) == 2
    moved = zip(_leaves(second.actor.params), _leaves(first.actor.params), strict=True)
    assert max(np.abs(a - b).max() for a, b in moved) > 0
    pairs = [  # the online networks from before the step, as the reference averages in
        (second.target_actor_params, first.actor.params, first.target_actor_params),
        (second.target_critic_params, first.critic.params, first.target_critic_params),
    ]
    for target, online, old in pairs:
        for t, n, o in zip(_leaves(target), _leaves(online), _leaves(old), strict=True):
            np.testing.assert_allclose(t, 0.3 * n + 0.7 * o, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# Known answers of the algorithms' pieces


def test_expectile_loss_recovers_the_expectile_of_a_known_sample():
    grid = jnp.linspace(-1, 2, 30001)

    def minimizer(sample, expectile):
        losses = expectile_loss(jnp.asarray(sample)[None, :] - grid[:, None], expectile).mean(1)
        return float(grid[jnp.argmin(losses)])

    # For the sample {0, 1} the τ-expectile e solves τ(1 − e) = (1 − τ)e, so e = τ.
    for expectile in (0.5, 0.7, 0.9):
        assert abs(minimizer([0.0, 1.0], expectile) - expectile) < 1e-3
    # {0, 0, 1} at τ = 0.9: 0.9(1 − e) = 0.1·2e, e = 0.9/1.1; τ = 0.5 gives the mean.
    assert abs(minimizer([0.0, 0.0, 1.0], 0.9) - 0.9 / 1.1) < 1e-3
    assert abs(minimizer([0.0, 0.0, 1.0], 0.5) - 1 / 3) < 1e-3


def _gelu(x):
    """flax's nn.gelu (the tanh approximation), in float64."""
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def test_mlp_hidden_layers_are_dense_then_gelu_then_layer_norm_by_hand():
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (5, 3)), np.float64)
    for layer_norm in (True, False):
        net = MLP((4, 6), 2, layer_norm)
        params = net.init(jax.random.PRNGKey(1), jnp.asarray(x, jnp.float32))
        # LayerNorm scales and offsets away from (1, 0), so that where they apply shows.
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: (
                p + 0.5 * jnp.sin(jnp.arange(p.size) + len(path[-1].key)).reshape(p.shape)
                if 'LayerNorm' in jax.tree_util.keystr(path)
                else p
            ),
            params,
        )
        layers = {k: {n: np.asarray(v, np.float64) for n, v in p.items()} for k, p in params['params'].items()}
        h = x
        for i in range(2):  # Dense → gelu → LayerNorm (ε = 1e-6), as the reference's MLP
            h = _gelu(h @ layers[f'Dense_{i}']['kernel'] + layers[f'Dense_{i}']['bias'])
            if layer_norm:
                ln = layers[f'LayerNorm_{i}']
                h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
                h = h * ln['scale'] + ln['bias']
        expected = h @ layers['Dense_2']['kernel'] + layers['Dense_2']['bias']
        got = np.asarray(net.apply(params, jnp.asarray(x, jnp.float32)), np.float64)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_mlp_kernels_start_uniform_within_the_references_fan_avg_bound():
    """The reference's default init, variance_scaling(1, 'fan_avg', 'uniform'): U(±√(6 / (fan_in + fan_out)))."""
    params = MLP((256, 64), 8).init(jax.random.PRNGKey(0), jnp.zeros((1, 32)))['params']
    for name, (fan_in, fan_out) in {'Dense_0': (32, 256), 'Dense_1': (256, 64), 'Dense_2': (64, 8)}.items():
        largest, bound = np.abs(params[name]['kernel']).max(), np.sqrt(6 / (fan_in + fan_out))
        assert 0.95 * bound < largest <= bound, name


def test_gaussian_actor_log_std_is_clipped_to_the_references_range():
    # OGBench's and FQL's Gaussian actors clip the log-std head to [-5, 2] (std in [e^-5, e^2]): SAC/RLPD's
    # policy can neither collapse to a point nor spread without bound.
    net = GaussianActor((8,), 2, state_dependent_std=True)
    obs = jnp.ones((3, 4))
    params = net.init(jax.random.PRNGKey(0), obs)
    for bias, expected in ((-12.0, -5.0), (9.0, 2.0), (-1.5, -1.5)):
        head = dict(
            params['params']['Dense_1'], kernel=jnp.zeros((8, 2)), bias=jnp.full((2,), bias)
        )  # the log-std head
        shifted = {'params': dict(params['params'], Dense_1=head)}
        _, log_std = net.apply(shifted, obs)
        np.testing.assert_allclose(np.asarray(log_std), expected, rtol=1e-6)


@pytest.mark.parametrize('name', sorted(MODULES))
@pytest.mark.parametrize('critic_layer_norm', [True, False])
def test_critic_layer_norm_setting_reaches_every_critic_network(name, critic_layer_norm):
    agent = _agent(name, critic_layer_norm=critic_layer_norm)
    assert has_layer_norm(agent.critic.params) == critic_layer_norm
    if name == 'iql':  # IQL's value network is a critic network too
        assert has_layer_norm(agent.value.params) == critic_layer_norm
    assert not has_layer_norm(agent.actor.params)  # actor_layer_norm is off by default
    assert has_layer_norm(_agent(name, actor_layer_norm=True).actor.params)


def test_rebrac_regularizers_vanish_when_the_actor_outputs_the_data_actions():
    agent, batch = _agent('rebrac', alpha_actor=5.0, alpha_critic=5.0, actor_noise=0.0), _batch()
    own = {
        **batch,
        'actions': jnp.tanh(agent.actor.apply_fn(agent.actor.params, batch['observations'])[0]),
        'next_actions': jnp.tanh(agent.actor.apply_fn(agent.target_actor_params, batch['next_observations'])[0]),
    }
    _, info = agent._actor_loss(agent.actor.params, own)
    assert float(info['bc_loss']) < 1e-12  # zero up to float rounding
    key = jax.random.PRNGKey(0)
    without = agent.replace(config=dataclasses.replace(agent.config, alpha_critic=0.0))
    loss = float(agent._critic_loss(agent.critic.params, own, key)[0])
    assert loss == pytest.approx(float(without._critic_loss(agent.critic.params, own, key)[0]), rel=1e-6)
    # With the dataset's own actions (not the actor's) both penalties are on.
    assert float(agent._actor_loss(agent.actor.params, batch)[1]['bc_loss']) > 0
    assert float(agent._critic_loss(agent.critic.params, batch, key)[0]) != pytest.approx(
        float(without._critic_loss(agent.critic.params, batch, key)[0]), rel=1e-3
    )


def test_sac_temperature_moves_toward_the_target_entropy():
    agent = _agent('sac', target_entropy_multiplier=1.0)  # H_target = −2
    alpha = float(agent.temperature.apply_fn(agent.temperature.params))
    for entropy, direction in ((-5.0, 1), (3.0, -1)):  # below the target: α grows; above: α shrinks
        grads, _ = jax.grad(agent._temperature_loss, has_aux=True)(agent.temperature.params, jnp.float32(entropy))
        stepped = agent.temperature.apply_gradients(grads=grads)
        assert np.sign(float(stepped.apply_fn(stepped.params)) - alpha) == direction
    # Through a whole update: a fresh policy's entropy is far above −100 · |A|, so α falls.
    new, _ = _agent('sac', target_entropy_multiplier=100.0).update(_batch())
    assert float(new.temperature.apply_fn(new.temperature.params)) < alpha
    # The default target is the reference's −|A|/2, and the loss is α·(H − H_target), by hand.
    default, action_dim = _agent('sac'), _batch()['actions'].shape[-1]
    assert default.target_entropy == pytest.approx(-0.5 * action_dim)
    loss, _ = default._temperature_loss(default.temperature.params, jnp.float32(1.0))
    alpha = float(default.temperature.apply_fn(default.temperature.params))
    assert float(loss) == pytest.approx(alpha * (1.0 + 0.5 * action_dim), rel=1e-6)


def test_sac_update_steps_the_temperature_on_the_actors_entropy():
    # H_target = 0, so α·(H − H_target) and a loss on −H have opposite signs: the step's direction tells them apart.
    agent = _agent('sac', target_entropy_multiplier=0.0)
    new, info = agent.update(_batch())
    entropy, alpha = float(info['entropy']), float(info['alpha'])
    assert abs(entropy) > 0.1
    assert np.isclose(float(info['temperature_loss']), alpha * entropy, rtol=1e-5)
    # d/d log α of α·H is α·H; Adam's first step moves log α by lr against that gradient's sign.
    new_alpha = float(new.temperature.apply_fn(new.temperature.params))
    assert np.isclose(np.log(new_alpha), np.log(alpha) - 3e-4 * np.sign(entropy), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Actor losses and policy densities, by hand (tiny networks, seeded inputs, float64 NumPy answers)

TINY_NETS = dict(hidden_dims=(8, 8), batch_size=8)


def _tiny(name, batch, **overrides):
    config = MODULES[name].Config(**{**TINY_NETS, **overrides})
    return MODULES[name].Agent.create(0, batch['observations'][:1], batch['actions'][:1], config)


def _scaled_layer(params, layer, factor):
    """`params` with the leaves of the layers named `layer` (e.g. a critic's output Dense) times `factor`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x * factor if layer in jax.tree_util.keystr(path) else x, params
    )


def _log_one_minus_tanh_squared(u):
    """log(1 − tanh(u)²) = −2·log cosh(u) = −2·(|u| + log1p(e^{−2|u|}) − log 2), in float64."""
    u = np.abs(np.asarray(u, np.float64))
    return -2.0 * (u + np.log1p(np.exp(-2.0 * u)) - np.log(2.0))


def test_iql_awr_actor_loss_by_hand():
    batch = _batch(n=8)
    agent = _tiny('iql', batch, alpha=10.0)
    agent = agent.replace(
        actor=agent.actor.replace(params=_scaled(agent.actor.params, 2.0)),  # μ(s) away from 0
        target_critic_params=_scaled(agent.critic.params, 1.5),  # the actor's weights use the online critic
    )
    s, a = batch['observations'], np.asarray(batch['actions'], np.float64)
    qs = np.asarray(agent.critic.apply_fn(agent.critic.params, s, batch['actions']), np.float64)
    v = np.asarray(agent.value.apply_fn(agent.value.params, s), np.float64)
    mean, log_std = (np.asarray(x, np.float64) for x in agent.actor.apply_fn(agent.actor.params, s))
    np.testing.assert_array_equal(log_std, 0.0)  # IQL's actor has a constant unit std
    advantage = qs.min(0) - v
    raw_weights = np.exp(10.0 * advantage)
    weights = np.minimum(raw_weights, 100.0)
    assert (raw_weights > 100).any() and (raw_weights < 1).any()  # the clip and the exponent both matter here
    assert np.abs(qs[0] - qs[1]).min() > 1e-3  # the members differ, so min ≠ mean
    log_prob = norm.logpdf(a, loc=mean, scale=1.0).sum(-1)
    expected = -np.mean(weights * log_prob)
    loss, info = agent._actor_loss(agent.actor.params, batch)
    assert np.isclose(float(loss), expected, rtol=1e-5)
    assert np.isclose(float(info['actor_loss']), expected, rtol=1e-5)
    assert np.isclose(float(info['advantage']), advantage.mean(), rtol=1e-5, atol=1e-6)
    assert np.isclose(float(info['bc_log_prob']), log_prob.mean(), rtol=1e-5)
    assert np.isclose(float(info['mse']), np.mean((mean - a) ** 2), rtol=1e-5)
    # The weights are constants of the actor's gradient: d/dμ_i of −mean_i w_i·log N(a_i; μ_i, 1) is
    # −w_i·(a_i − μ_i)/n, so the mean head's bias gets −Σ_i w_i·(a_i − μ_i)/n.
    grads = jax.grad(lambda p: agent._actor_loss(p, batch)[0])(agent.actor.params)
    expected_bias_grad = -np.sum(weights[:, None] * (a - mean), 0) / len(a)
    np.testing.assert_allclose(np.asarray(grads['params']['Dense_0']['bias']), expected_bias_grad, rtol=1e-4)

    # Hand-chosen Q (two members) and V: advantages 0.2, −0.2, −0.1, 1.0 give weights e², e⁻², e⁻¹ and
    # e¹⁰ clipped to 100.
    small = {k: v[:4] for k, v in batch.items()}
    fixed_qs = jnp.array([[1.0, 0.5, 0.0, 2.0], [0.8, 0.9, -0.1, 3.0]])
    fixed = agent.replace(
        critic=agent.critic.replace(apply_fn=lambda params, s, a: fixed_qs),
        value=agent.value.replace(apply_fn=lambda params, s: jnp.array([0.6, 0.7, 0.0, 1.0])),
    )
    weights = np.array([np.e**2, np.e**-2, np.e**-1, 100.0])
    mean = np.asarray(agent.actor.apply_fn(agent.actor.params, small['observations'])[0], np.float64)
    diff = np.asarray(small['actions'], np.float64) - mean
    log_prob = np.sum(-0.5 * diff**2 - 0.5 * np.log(2 * np.pi), -1)
    loss, info = fixed._actor_loss(agent.actor.params, small)
    assert np.isclose(float(loss), -np.mean(weights * log_prob), rtol=1e-5)
    assert np.isclose(float(info['advantage']), np.mean([0.2, -0.2, -0.1, 1.0]), atol=1e-6)


def test_iql_explores_with_unit_std_gaussian_noise_around_its_mean():
    batch, key = _batch(n=8), jax.random.PRNGKey(3)
    agent = _tiny('iql', batch)
    s = batch['observations']
    mean = np.asarray(agent.actor.apply_fn(agent.actor.params, s)[0], np.float64)
    noise = np.asarray(jax.random.normal(key, mean.shape), np.float64)  # std exp(0) = 1
    expected = np.clip(mean + noise, -1, 1)
    assert 0 < np.mean(np.abs(expected) == 1) < 1  # some clipped, some not
    np.testing.assert_allclose(np.asarray(agent.sample_actions(s, key)), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(agent.eval_actions(s, key)), np.clip(mean, -1, 1), atol=1e-7)


def test_rebrac_actor_loss_by_hand_with_the_q_term_dominating():
    batch = _batch(n=8)
    agent = _tiny('rebrac', batch, alpha_actor=0.01)  # humanoidmaze-medium's α_actor
    # Q ~ ±20 (the critic's output layer scaled up) and π(s) away from 0: the Q term is ~100× the BC term.
    critic_params = _scaled_layer(agent.critic.params, 'Dense_2', 20.0)
    critic_params['params']['VmapMLP_0']['Dense_2']['bias'] += 15.0  # Q of both signs
    agent = agent.replace(
        actor=agent.actor.replace(params=_scaled(agent.actor.params, 2.0)),
        critic=agent.critic.replace(params=critic_params),
    )
    s, a = batch['observations'], np.asarray(batch['actions'], np.float64)
    policy = np.tanh(np.asarray(agent.actor.apply_fn(agent.actor.params, s)[0], np.float64))
    qs = np.asarray(agent.critic.apply_fn(agent.critic.params, s, policy.astype(np.float32)), np.float64)
    q = qs.min(0)
    assert (q > 0).any() and (q < 0).any() and np.abs(q).mean() > 5  # mixed signs, far from unit scale
    assert np.abs(qs[0] - qs[1]).min() > 1e-2  # min ≠ mean
    scale = 1.0 / np.abs(q).mean()
    q_loss = -np.mean(scale * q)
    bc_loss = 0.01 * np.mean(np.sum((policy - a) ** 2, -1))
    assert abs(q_loss) > 0.5 and abs(q_loss) > 20 * bc_loss > 0  # the Q term dominates
    loss, info = agent._actor_loss(agent.actor.params, batch)
    assert np.isclose(float(loss), q_loss + bc_loss, rtol=1e-5)
    assert np.isclose(float(info['actor_loss']), q_loss + bc_loss, rtol=1e-5)
    assert np.isclose(float(info['actor_q_loss']), q_loss, rtol=1e-5)
    assert np.isclose(float(info['bc_loss']), bc_loss, rtol=1e-5)

    # λ = 1 / E|Q| is a constant of the gradient: compare with the gradient of the loss written out with
    # λ a plain number (with a gradient through λ, −mean(λ·Q) would have a different one).
    def written_out(params):
        actions = jnp.tanh(agent.actor.apply_fn(params, s)[0])
        q = agent.critic.apply_fn(agent.critic.params, s, actions).min(0)
        return -jnp.mean(float(scale) * q) + 0.01 * jnp.mean(jnp.sum((actions - batch['actions']) ** 2, -1))

    grads = jax.grad(lambda p: agent._actor_loss(p, batch)[0])(agent.actor.params)
    for got, want in zip(_leaves(grads), _leaves(jax.grad(written_out)(agent.actor.params)), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_gaussian_log_prob_and_tanh_log_det_match_closed_forms():
    keys = jax.random.split(jax.random.PRNGKey(11), 3)
    x, mean = jax.random.normal(keys[0], (3, 5, 2)), jax.random.normal(keys[1], (3, 5, 2))
    log_std = jax.random.uniform(keys[2], (3, 5, 2), minval=-2.0, maxval=1.5)
    expected = norm.logpdf(np.asarray(x), np.asarray(mean), np.exp(np.asarray(log_std, np.float64))).sum(-1)
    got = np.asarray(gaussian_log_prob(x, mean, log_std))
    assert got.shape == (3, 5)  # summed over the action axis only
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    moderate = np.array([[-3.0, -1.0], [-0.5, 0.0], [0.25, 2.0], [1.5, 3.0]], np.float32)
    expected = np.log1p(-(np.tanh(moderate.astype(np.float64)) ** 2)).sum(-1)  # the naive form is exact here
    np.testing.assert_allclose(np.asarray(tanh_log_det(jnp.asarray(moderate))), expected, rtol=1e-5, atol=1e-6)
    # Where tanh saturates in float32 (1 − tanh² rounds to 0) the value stays finite and exact.
    saturated = np.array([[-40.0, 12.0], [25.0, -0.3], [60.0, 80.0]], np.float32)
    got = np.asarray(tanh_log_det(jnp.asarray(saturated)))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _log_one_minus_tanh_squared(saturated).sum(-1), rtol=1e-6)
    # d/du log(1 − tanh²u) = −2·tanh(u), finite everywhere.
    grads = np.asarray(jax.grad(lambda u: tanh_log_det(u).sum())(jnp.asarray(saturated)))
    np.testing.assert_allclose(grads, -2.0 * np.tanh(saturated.astype(np.float64)), rtol=1e-5, atol=1e-6)

    # log π of a = tanh(u), u ~ N(0.4, 0.6²), is a density on (−1, 1): it integrates to 1.
    a = np.linspace(-1.0, 1.0, 40001)[1:-1]
    u = jnp.asarray(np.arctanh(a)[:, None], jnp.float32)
    log_density = gaussian_log_prob(u, jnp.full_like(u, 0.4), jnp.full_like(u, np.log(0.6))) - tanh_log_det(u)
    assert abs(np.trapezoid(np.exp(np.asarray(log_density, np.float64)), a) - 1.0) < 1e-3


def test_sac_evaluates_with_tanh_of_its_mean_not_a_clip():
    batch = _batch(n=8)
    agent = _tiny('sac', batch)
    head = _scaled_layer(agent.actor.params, "['params']['Dense_0']", 30.0)  # the mean head: means beyond ±1
    agent = agent.replace(actor=agent.actor.replace(params=head))
    s = batch['observations']
    mean = np.asarray(agent.actor.apply_fn(agent.actor.params, s)[0], np.float64)
    assert np.abs(mean).max() > 1.5 and np.any((np.abs(mean) > 0.3) & (np.abs(mean) < 1))
    # a = tanh(mean): inside (−1, 1) everywhere, and below |mean| even where a clip would keep the mean.
    np.testing.assert_allclose(np.asarray(agent.eval_actions(s, None)), np.tanh(mean), rtol=1e-5, atol=1e-6)


def test_sac_actor_loss_by_hand():
    batch = _batch(n=8)
    agent = _tiny('sac', batch, initial_temperature=0.3)
    agent = agent.replace(
        actor=agent.actor.replace(params=_scaled(agent.actor.params, 2.0)),  # a wide spread of σ
        target_critic_params=_scaled(agent.critic.params, 1.5),  # the actor's Q is the online critic's
    )
    s, key = batch['observations'], jax.random.PRNGKey(3)
    mean, log_std = (np.asarray(x, np.float64) for x in agent.actor.apply_fn(agent.actor.params, s))
    assert log_std.max() - log_std.min() > 1.0  # a state-dependent std
    u = mean + np.exp(log_std) * np.asarray(jax.random.normal(key, mean.shape), np.float64)
    assert np.abs(u).max() > 1.5  # the tanh correction matters
    actions = np.tanh(u)
    log_prob = np.sum(norm.logpdf(u, mean, np.exp(log_std)) - _log_one_minus_tanh_squared(u), -1)
    qs = np.asarray(agent.critic.apply_fn(agent.critic.params, s, actions.astype(np.float32)), np.float64)
    assert abs(qs.mean(0).mean() - qs.min(0).mean()) > 1e-2  # mean over members ≠ min
    expected = np.mean(0.3 * log_prob - qs.mean(0))  # α = 0.3, the initial temperature
    loss, info = agent._actor_loss(agent.actor.params, batch, key)
    assert np.isclose(float(loss), expected, rtol=1e-5, atol=1e-6)
    assert np.isclose(float(info['actor_loss']), expected, rtol=1e-5, atol=1e-6)
    assert np.isclose(float(info['entropy']), -log_prob.mean(), rtol=1e-5, atol=1e-6)
    assert np.isclose(float(info['actor_q']), qs.mean(), rtol=1e-5, atol=1e-6)
    # The sample and its log-density come from the same reparameterized draw.
    sampled, sampled_log_prob = agent._sample_with_log_prob(agent.actor.params, s, key)
    np.testing.assert_allclose(np.asarray(sampled), actions, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sampled_log_prob), log_prob, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Balanced sampling


def _marked_buffer(offline=10, online=3, capacity=20):
    """Offline rows have reward 0, online rows (appended after them) reward 1; observation = row index."""
    n = offline + online
    data = dict(
        observations=np.arange(n, dtype=np.float32)[:, None],
        actions=np.linspace(-0.9, 0.9, n, dtype=np.float32)[:, None],
        next_observations=np.zeros((n, 1), np.float32),
        rewards=(np.arange(n) >= offline).astype(np.float32),
        masks=np.ones(n, np.float32),
        terminals=np.zeros(n, np.float32),
    )
    buffer = ReplayBuffer.create({k: v[:offline] for k, v in data.items()}, capacity=capacity)
    return buffer.append({k: v[offline:] for k, v in data.items()}) if online else buffer


def test_a_balanced_batch_holds_exactly_half_offline_rows():
    buffer, sample = _marked_buffer(), jax.jit(lambda b, k: b.sample(k, 64, balanced=True))
    for seed in range(5):
        batch = sample(buffer, jax.random.PRNGKey(seed))
        rows = np.asarray(batch['observations'][:, 0]).astype(int)
        assert (rows < 10).sum() == 32 and (rows >= 10).sum() == 32
        assert rows.max() < 13  # never the empty rows beyond `size`
        # next_actions is the action of the following row (the last filled row repeats its own).
        expected = np.asarray(buffer.data['actions'])[np.minimum(rows + 1, 12)]
        np.testing.assert_array_equal(np.asarray(batch['next_actions']), expected)
    # Before any online row exists, every row is an offline one, drawn uniformly.
    offline_only = _marked_buffer(online=0)
    rows = np.asarray(offline_only.sample(jax.random.PRNGKey(0), 400, balanced=True)['observations'][:, 0])
    assert rows.max() < 10 and len(np.unique(rows)) == 10


def test_balanced_sampling_after_the_ring_wraps():
    """Capacity 12, 10 dataset rows, 4 online rows: the last two overwrote rows 0 and 1, no longer offline."""
    buffer = _marked_buffer(offline=10, online=0, capacity=12)
    online = {k: np.full((4, *v.shape[1:]), 1.0, np.float32) for k, v in buffer.data.items()}
    online['observations'] = np.arange(100, 104, dtype=np.float32)[:, None]
    buffer = buffer.append(online)
    rows = np.asarray(buffer.sample(jax.random.PRNGKey(3), 400, balanced=True)['observations'][:, 0]).astype(int)
    assert sorted(set(rows[:200])) == list(range(2, 10))  # the surviving dataset rows
    assert sorted(set(rows[200:])) == [100, 101, 102, 103]  # every online row, the wrapped one included


class _BatchProbe(flax.struct.PyTreeNode):
    """A stand-in agent whose update reports the share of online rows (reward 1) in its batch."""

    config: object = flax.struct.field(pytree_node=False, default=None)

    def update(self, batch):
        return self, dict(online_fraction=batch['rewards'].mean())


def test_online_chunk_passes_balanced_sampling_through():
    new = {k: np.ones((1, 4, 1), np.float32) for k in ('observations', 'actions')}  # (runs, steps, ...)
    new.update(next_observations=np.zeros((1, 4, 1), np.float32), rewards=np.ones((1, 4), np.float32))
    new.update(masks=np.ones((1, 4), np.float32), terminals=np.zeros((1, 4), np.float32))
    key = jax.random.PRNGKey(0)[None]

    def online_fraction(balanced):
        # online_chunk donates the buffer it is given: each call gets a fresh one.
        buffer = GroupBuffer(runs=as_group(_marked_buffer(online=0)))
        _, _, info, _, _ = online_chunk(as_group(_BatchProbe()), buffer, new, key, 0, 64, balanced=balanced)
        return float(info['online_fraction'][0])

    assert online_fraction(True) == 0.5
    assert online_fraction(False) < 0.4  # uniform: mostly offline


# ------------------------------------------------------------------------------------------------
# Whole runs through the CLI: O2O, SIGKILL + resume gives the same result


@pytest.mark.slow
@pytest.mark.parametrize(
    'agent, steps',
    [('iql', ['--offline-steps', '50']), ('rebrac', ['--offline-steps', '50']), ('rlpd', [])],
)
def test_o2o_run_resumes_to_the_same_result(agent, steps, dataset, tmp_path):
    args = ['--env', 'cube-single', '--task', '1', '--dataset', dataset, '--agent', agent, *steps]
    # Evaluations at step 1, the end of the offline phase and the end (each costs a 200-step episode).
    args += '--online-steps 250 --eval-every 1000 --save-every 50 --log-every 50 --updates-per-call 50'.split()
    args += SMALL
    whole = str(tmp_path / 'whole')
    result = launch('o2o', *args, '--run-dir', whole)
    assert result.returncode == 0, result.stderr
    final = json.loads(Path(whole, 'final.json').read_text())
    assert final['agent'] == agent and 0 <= final['online_score'] <= 100
    config = json.loads(Path(whole, 'config.json').read_text())
    assert config['balanced_sampling'] == (agent == 'rlpd')
    # RLPD keeps every dataset row beside 2M online rows (the reference's separate online buffer).
    assert (config['buffer_capacity'] > 2_000_000) == (agent == 'rlpd') and config['buffer_capacity'] >= 2_000_000
    assert config['offline_steps'] == (0 if agent == 'rlpd' else 50) and final['steps'] == config['offline_steps'] + 250
    kill_at = config['offline_steps'] + 150  # mid-episode in the online phase
    run_killed_then_resumed('o2o', args, str(tmp_path / 'killed'), kill_after_step=kill_at)
    assert_same_result(whole, str(tmp_path / 'killed'))


def test_rlpd_refuses_an_offline_phase_and_the_offline_cli(tmp_path):
    run_dir = tmp_path / 'r'
    # --dataset nowhere.npz: a refusal lost would stop at the missing data, not generate a dataset and train.
    where = ['--env', 'cube-single', '--dataset', str(tmp_path / 'nowhere.npz'), '--run-dir', str(run_dir)]
    result = launch('o2o', *where, '--agent', 'rlpd', '--offline-steps', '10')
    assert result.returncode == 2 and 'offline-steps' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not run_dir.exists()
    result = launch('offline', *where, '--agent', 'rlpd')
    assert result.returncode == 2 and 'rlpd' in result.stderr and not run_dir.exists()
    help_text = launch('o2o', '--help').stdout
    assert 'rlpd = sac + --balanced-sampling + --offline-steps 0' in ' '.join(help_text.split())
