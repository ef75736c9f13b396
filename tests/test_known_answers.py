"""Known answers for the learning logic: each expected value is computed here, by hand, from the batch
and fixed networks, never by running the code under test a second time.

Pinned: FAV's critic target and loss, the target-network update, the actor loss against docs/algorithm.md's
formula, the online transitions, the order of append and update online, and evaluation seeding.
"""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.wrappers import RecordEpisodeStatistics

from agents.fav import FAVAgent, FAVConfig, get_config
from datasets.buffer import GroupBuffer
from envs.evaluation import episode_seed, evaluate
from envs.pool import EnvPool
from envs.registry import FAMILIES
from launch.compiled import as_group, offline_chunk, online_chunk
from launch.online_envs import OnlineEnvs

OBS_DIM, ACT_DIM = 3, 2


def _batch(n=6):
    rng = np.random.default_rng(0)
    return dict(
        observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-0.9, 0.9, (n, ACT_DIM)).astype(np.float32),
        next_observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        # Row 1 is a truncation (mask 1, terminal 1): the target must read masks, not terminals.
        masks=np.array([0, 1, 1, 0, 1, 1], np.float32)[:n],
        terminals=np.array([1, 1, 0, 1, 0, 0], np.float32)[:n],
    )


def _agent(config, seed=0):
    """A small FAV agent whose target critic differs from its critic (so their roles can't be swapped)."""
    batch = _batch()
    agent = FAVAgent.create(jax.random.PRNGKey(seed), batch['observations'][:1], batch['actions'][:1], config)
    other = FAVAgent.create(jax.random.PRNGKey(seed + 100), batch['observations'][:1], batch['actions'][:1], config)
    return agent.replace(target_critic_params=other.critic.params)


def _f64(x):
    return np.asarray(x, np.float64)


# ------------------------------------------------------------------------------------------------
# Critic


@pytest.mark.parametrize(
    'family, q_agg, discount, aggregate',
    [
        # antmaze-giant: γ = 0.995 and min over the ensemble (docs/algorithm.md), from the registry via get_config.
        ('antmaze-giant-navigate', None, 0.995, np.min),
        ('antmaze-giant-navigate', 'mean', 0.995, np.mean),
        ('cube-double-play', None, 0.99, np.mean),
        ('cube-double-play', 'min', 0.99, np.min),
    ],
)
def test_critic_loss_is_the_td_error_computed_by_hand(family, q_agg, discount, aggregate):
    overrides = dict(hidden_dims=(16, 16), batch_size=6)
    if q_agg is not None:
        overrides['q_agg'] = q_agg
    agent = _agent(get_config(FAMILIES[family], overrides))
    batch = _batch()
    rng = jax.random.PRNGKey(7)

    # The next action: one actor sample at s', with the noise the loss draws from `rng`.
    noise = jax.random.normal(rng, (len(batch['rewards']), ACT_DIM))
    next_actions = agent.actor.apply_fn(agent.actor.params, batch['next_observations'], noise)
    assert not np.allclose(next_actions, batch['actions'], atol=0.05)
    next_qs = _f64(agent.critic.apply_fn(agent.target_critic_params, batch['next_observations'], next_actions))
    assert next_qs.shape == (2, 6) and np.abs(next_qs[0] - next_qs[1]).mean() > 0.1  # members differ: min ≠ mean
    target = batch['rewards'] + discount * batch['masks'] * aggregate(next_qs, axis=0)
    qs = _f64(agent.critic.apply_fn(agent.critic.params, batch['observations'], batch['actions']))
    expected = np.mean((qs - target) ** 2)

    loss, info = agent._critic_loss(agent.critic.params, batch, rng)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(info['critic_loss']) == float(loss)

    # Its gradient is the MSE's, with the target held fixed: d/dθ mean((Q_θ - y)²) = 2(Q - y)/n · dQ/dθ.
    def critic(params):
        return agent.critic.apply_fn(params, batch['observations'], batch['actions'])

    _, pullback = jax.vjp(critic, agent.critic.params)
    (expected_grads,) = pullback(jnp.asarray(2 * (qs - target) / qs.size, jnp.float32))
    grads, _ = jax.grad(agent._critic_loss, has_aux=True)(agent.critic.params, batch, rng)
    for g, e in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected_grads), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-4, atol=1e-6)


def test_target_network_is_polyak_averaged_with_the_configs_tau():
    tau = 0.3  # not the default 0.005, so a hard-coded τ fails
    agent = _agent(get_config(FAMILIES['cube-double-play'], dict(hidden_dims=(16, 16), batch_size=6, tau=tau)))
    new, _ = agent.update(_batch())
    leaves = jax.tree_util.tree_leaves
    for target, critic, old_target, old_critic in zip(
        leaves(new.target_critic_params),
        leaves(new.critic.params),
        leaves(agent.target_critic_params),
        leaves(agent.critic.params),
        strict=True,
    ):
        assert not np.allclose(critic, old_critic)  # the critic did move
        # The reference averages in the critic from before the step's update.
        np.testing.assert_allclose(
            _f64(target), tau * _f64(old_critic) + (1 - tau) * _f64(old_target), rtol=1e-6, atol=1e-7
        )


# ------------------------------------------------------------------------------------------------
# Actor


def _quadratic_critic(params, observations, actions):
    """Q_k(s, a) = -||a - c_k||² for ensemble member k; output (num_qs, ...) like CriticEnsemble."""
    centers = params['centers'].reshape((-1,) + (1,) * (actions.ndim - 1) + (actions.shape[-1],))
    return -jnp.sum((actions[None] - centers) ** 2, -1)


def _prior_score(x, y, sigma, form):
    """∇log p̂_ref(x) of docs/algorithm.md for samples x (M, d) and reference particles y (K, d)."""
    sq = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    if form == 'softmax':
        w = np.exp(-(sq - sq.min(1, keepdims=True)) / sigma)
        w /= w.sum(1, keepdims=True)
        return 2 * (w @ y - x) / sigma
    k = np.exp(-sq / sigma)  # 'clipped': the reference code's clipped denominator
    total = np.maximum(k.sum(1, keepdims=True), 1e-6)
    return 2 * (k @ y - total * x) / (sigma * total)


def _design_phi(x, y, grad_q, sigma, beta, form):
    """φ(x_j) = 1/M Σ_l k(x_l, x_j)[∇log p̂_ref(x_l) + β∇Q̄(x_l)] + 1/M Σ_l ∇_{x_l} k(x_l, x_j)."""
    m = len(x)
    diffs = x[:, None, :] - x[None, :, :]  # [l, j] = x_l - x_j
    kernel = np.exp(-(diffs**2).sum(-1) / sigma)  # [l, j] = k(x_l, x_j)
    driving = kernel.T @ (_prior_score(x, y, sigma, form) + beta * grad_q) / m
    repulsive = (-2 / sigma * diffs * kernel[..., None]).sum(0) / m
    return driving + repulsive


def test_actor_loss_and_gradient_follow_the_designs_formula():
    sigma, beta, num_samples = 0.1, 2.0, 4
    config = FAVConfig(hidden_dims=(16, 16), batch_size=2, sigma=sigma, beta=beta, num_samples=num_samples)
    form = getattr(config, 'prior_score', 'softmax')  # the config's reference-score form
    agent = _agent(config)
    centers = np.array([[0.6, -0.4], [0.2, 0.8]], np.float32)  # mean center c̄ = (0.4, 0.2)
    agent = agent.replace(critic=agent.critic.replace(apply_fn=_quadratic_critic, params={'centers': centers}))
    batch = _batch(n=2)  # two states, each with its own dataset action as the reference particle:
    # near the actor's samples for state 0, far from them (beyond the clipped form's 1e-6) for state 1.
    batch['actions'] = np.array([[-0.2, 0.3], [-0.9, -0.9]], np.float32)
    rng = jax.random.PRNGKey(3)

    # The actor's samples, with the noise the loss draws from `rng`.
    noise_key, _ = jax.random.split(rng)
    obs = jnp.repeat(batch['observations'][:, None, :], num_samples, axis=1)
    noise = jax.random.normal(noise_key, (2, num_samples, ACT_DIM))

    def actor(params):
        return agent.actor.apply_fn(params, obs, noise)

    x, pullback = jax.vjp(actor, agent.actor.params)
    x = _f64(x)
    grad_q = -2 * (x - centers.mean(0))  # ∇_a of the ensemble mean of -||a - c_k||²
    phi = np.stack(
        [
            _design_phi(x[b], batch['actions'][b : b + 1].astype(np.float64), grad_q[b], sigma, beta, form)
            for b in (0, 1)
        ]
    )
    assert np.linalg.norm(phi, axis=-1).min() > 0.1  # a real move, so the comparison is not vacuous
    far = x[1], batch['actions'][1:].astype(np.float64)  # and the two reference-score forms differ there
    assert not np.allclose(_prior_score(*far, sigma, 'softmax'), _prior_score(*far, sigma, 'clipped'), rtol=0.1)

    loss, _ = agent._actor_loss(agent.actor.params, batch, rng)
    # L = mean_j ||sg(x_j + φ_j) - x_j||² = mean_j ||φ_j||².
    np.testing.assert_allclose(float(loss), np.mean((phi**2).sum(-1)), rtol=1e-4)
    # The gradient flows through x_j only: dL/dθ = mean_j -2 φ_j · dx_j/dθ, which moves x_j along φ_j.
    (expected_grads,) = pullback(jnp.asarray(-2 * phi / (2 * num_samples), jnp.float32))
    grads, _ = jax.grad(agent._actor_loss, has_aux=True)(agent.actor.params, batch, rng)
    for g, e in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected_grads), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=2e-3, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Online phase


class _ScriptedEnv(gymnasium.Env):
    """Episode 0 is truncated after 2 steps, episode 1 terminates after 1 step, later ones last 3 steps.

    Observations say (episode, step): reset gives (e, 0) + 100 so that it can't pass for a step's
    observation. Reward of a step = 10·e + t. Every action received is recorded.
    """

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-1, 1, (ACT_DIM,), np.float32)

    def __init__(self):
        self.episode, self.t, self.actions = -1, 0, []

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.array([self.episode, 100.0], np.float32), {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        terminated = self.episode == 1 and self.t == 1
        truncated = (self.episode == 0 and self.t == 2) or self.t == 3
        observation = np.array([self.episode, self.t], np.float32)
        return observation, float(10 * self.episode + self.t), terminated, truncated, {'success': float(terminated)}


def test_online_transitions_mark_truncation_and_termination_and_shift_rewards():
    """The O2O loop's own env stepping (OnlineEnvs, as GroupTrainer uses it) over the scripted episodes."""
    shift = -1.0  # e.g. the D4RL AntMaze families' r ← r - 1
    assert FAMILIES['antmaze-umaze-v2'].reward_shift == shift
    pool = EnvPool([lambda: RecordEpisodeStatistics(_ScriptedEnv())])
    online = OnlineEnvs([0], shift)
    online.start(pool)
    sent = np.array([[0.1, -0.2], [1.5, -1.5], [0.3, 0.4], [-0.5, 0.6]], np.float32)  # one outside [-1, 1]
    stored = [online.step(action[None]) for action in sent]  # one run: (1, ...) per step

    def column(key):
        return np.concatenate([t[key] for t in stored])

    # Steps: (episode 0, t 1), (0, 2) truncated, (1, 1) terminated, (2, 1).
    np.testing.assert_array_equal(column('masks'), [1, 1, 0, 1])
    np.testing.assert_array_equal(column('terminals'), [0, 1, 1, 0])
    np.testing.assert_array_equal(column('rewards'), [1 - 1, 2 - 1, 11 - 1, 21 - 1])
    np.testing.assert_array_equal(column('observations'), [[0, 100], [0, 1], [1, 100], [2, 100]])
    # An episode's last transition keeps its own next observation, not the next episode's first one
    # (the truncated one bootstraps from it).
    np.testing.assert_array_equal(column('next_observations'), [[0, 1], [0, 2], [1, 1], [2, 1]])
    np.testing.assert_array_equal(column('actions'), sent)
    np.testing.assert_array_equal(np.stack(pool.local[0].unwrapped.actions), sent)
    np.testing.assert_array_equal(online.observations, [[2, 1]])  # the episode in progress
    # Finished episodes as (success, return before the shift, length), then as the log's means.
    assert online.episode_index == [2] and online.recent_episodes == [[(0.0, 3.0, 2.0), (1.0, 11.0, 1.0)]]
    assert online.pop_recent(0) == dict(online_success=0.5, online_return=7.0, online_length=1.5, online_episodes=2)
    assert online.pop_recent(0) == {}
    # Episode 2 runs to its truncation: the next log has it alone, and counts the run's episodes so far.
    for action in sent[:2]:
        online.step(action[None])
    assert online.pop_recent(0) == dict(online_success=0.0, online_return=66.0, online_length=3.0, online_episodes=3)


def _rows(n, value):
    rng = np.random.default_rng(int(value))
    return dict(
        observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        actions=rng.uniform(-0.9, 0.9, (n, ACT_DIM)).astype(np.float32),
        next_observations=rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        rewards=np.full(n, value, np.float32),
        masks=np.ones(n, np.float32),
        terminals=np.zeros(n, np.float32),
    )


def _same(a, b):
    return all(
        np.allclose(x, y, rtol=1e-5, atol=1e-6)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_each_online_update_samples_a_buffer_that_holds_its_transition():
    offline, new = _rows(3, 0.0), _rows(2, 50.0)  # a tiny dataset, so a batch of 16 draws the new rows
    config = FAVConfig(hidden_dims=(16, 16), batch_size=16)
    start = _agent(config)
    data_key, step = jax.random.PRNGKey(5), 40

    agent, buffer, _, finite, _ = online_chunk(
        as_group(start),
        GroupBuffer.of_one_task(offline, capacity=5),
        {k: v[None] for k, v in new.items()},  # (runs, steps, ...)
        data_key[None],
        step,
        config.batch_size,
    )
    assert bool(finite[0]) and int(buffer.runs.online_count[0]) == 2

    # By hand: append transition t, then one offline-style update (key of step + t) on the grown buffer.
    # (Every buffer here has room for 5 rows, as the online one: batches are drawn from the filled rows
    # only, and one shape compiles once.)
    expected = as_group(start)
    for t in range(2):
        grown = GroupBuffer.of_one_task({k: np.concatenate([offline[k], new[k][: t + 1]]) for k in offline}, capacity=5)
        expected, _, _ = offline_chunk(expected, grown, data_key[None], step + t, 1, config.batch_size)
    assert _same(agent, expected)

    # Not vacuous: an update that did not see its transition gives another agent.
    unseen, _, _ = offline_chunk(
        as_group(start), GroupBuffer.of_one_task(offline, capacity=5), data_key[None], step, 1, 16
    )
    with_first = GroupBuffer.of_one_task({k: np.concatenate([offline[k], new[k][:1]]) for k in offline}, capacity=5)
    seen, _, _ = offline_chunk(as_group(start), with_first, data_key[None], step, 1, 16)
    assert not _same(seen, unseen)


# ------------------------------------------------------------------------------------------------
# Evaluation


class _SeedRecordingEnv(gymnasium.Env):
    """Records its reset seeds, the first observation of every episode (drawn from its own generator)
    and its step count. Episode k of copy c lasts 2 + 2c + (k mod 2) steps, so copies end episodes
    at different times. `success` is 1 at every step but the last of even episodes, and only at the
    last step of odd ones: only the last step's flag gives the episode's outcome (odd: success)."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gymnasium.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, copy):
        self.copy, self.seeds, self.starts, self.steps, self.episode, self.t = copy, [], [], 0, -1, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.seeds.append(seed)
        self.episode, self.t = self.episode + 1, 0
        self.starts.append(float(self.np_random.uniform()))
        return np.array([self.starts[-1]], np.float32), {}

    def step(self, action):
        self.steps += 1
        self.t += 1
        last = self.t == 2 + 2 * self.copy + self.episode % 2
        success = float(last) if self.episode % 2 else float(not last)
        return np.array([self.t], np.float32), 1.0, False, last, {'success': success}


def test_evaluation_seeds_each_copy_and_reads_success_at_the_last_step():
    n, episodes, seed_keys = 3, 7, (4, 1, 200)  # quotas 3, 2, 2
    pool = EnvPool([lambda c=c: RecordEpisodeStatistics(_SeedRecordingEnv(c)) for c in range(n)])
    result = evaluate(pool, lambda obs, t: np.zeros((n, 1), np.float32), episodes, [seed_keys])[0]
    envs = [e.unwrapped for e in pool.local]

    # Copy i is reset first with its own seed, then continues its own generator (seed None).
    assert [e.seeds[0] for e in envs] == [episode_seed(*seed_keys, i) for i in range(n)]
    assert len({e.seeds[0] for e in envs}) == n and all(s is None for e in envs for s in e.seeds[1:])
    # No episode is repeated: every episode of every copy starts from a different state.
    starts = [s for e in envs for s in e.starts]
    assert len(set(starts)) == len(starts)
    # Counted: copy 0's first 3 episodes (lengths 2, 3, 2), copy 1's first 2 (4, 5), copy 2's (6, 7).
    lengths = [2, 3, 2, 4, 5, 6, 7]
    assert result['episode_length'] == pytest.approx(np.mean(lengths))
    assert result['episode_return'] == pytest.approx(np.mean(lengths))
    # Success at the last step: episode 1 of every copy (odd) succeeds; even episodes fail.
    assert result['success'] == pytest.approx(3 / 7)
    # It stops once the last quota is done: copy 2's two episodes, 6 + 7 steps (its reset step between).
    assert envs[2].steps == 13


def test_online_episodes_are_seeded_per_run_and_restored_to_the_same_state():
    """Two runs (seeds 5 and 9) on envs whose episodes end at different steps: each reset's seed comes from the
    run's own seed and episode index, and a fresh OnlineEnvs given the runs' checkpoint state replays each
    env to where it was."""
    seeds = [5, 9]
    pool = EnvPool([lambda c=c: RecordEpisodeStatistics(_SeedRecordingEnv(c)) for c in range(2)])
    online = OnlineEnvs(seeds, 0.0)
    online.start(pool)
    for t in range(5):  # run 0: episodes of 2 and 3 steps end; run 1: one of 4 steps, then 1 step of the next
        online.step(np.full((2, 1), 0.25 * t, np.float32))
    envs = [e.unwrapped for e in pool.local]
    assert envs[0].seeds == [episode_seed(5, 2, k) for k in range(3)]
    assert envs[1].seeds == [episode_seed(9, 2, k) for k in range(2)]
    assert online.episode_index == [2, 1]

    states = [online.state(r, 1) for r in range(2)]
    resumed = OnlineEnvs(seeds, 0.0)
    for r, state in enumerate(states):
        resumed.restore(r, state)
    resumed.start(EnvPool([lambda c=c: RecordEpisodeStatistics(_SeedRecordingEnv(c)) for c in range(2)]))
    assert resumed.episode_index == [2, 1]
    np.testing.assert_array_equal(resumed.episode_actions[1], [[1.0]])  # run 1's episode in progress
    assert resumed.episode_actions[0] == []
    np.testing.assert_array_equal(resumed.observations, online.observations)
    for r in range(2):
        assert resumed.pop_recent(r) == online.pop_recent(r) != {}
