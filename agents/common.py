"""Pieces every agent shares: the critic's TD target, setting checks, optimizer states, the BC flow
policy's loss and sampler (FAV's reference, FQL, IFQL) and policy densities."""

import dataclasses
import math

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState


def aggregate_q(qs, how):
    """Combines an ensemble's Q values (leading axis = members): 'mean' or 'min'."""
    return qs.min(0) if how == 'min' else qs.mean(0)


def td_target(batch, discount, next_q):
    """r + γ · mask · Q(s', ·): `masks` is 0 only where the episode terminated (not on truncation)."""
    return batch['rewards'] + discount * batch['masks'] * next_q


def check_settings(checks):
    """Raises ValueError with the message of the first failed (ok, message) pair."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def common_checks(config):
    """Checks of the settings every agent has (lr, batch_size, discount, hidden_dims, ...)."""
    checks = [
        (config.batch_size >= 2, f'agent.batch_size must be >= 2, got {config.batch_size}'),
        (config.lr > 0, f'agent.lr must be > 0, got {config.lr}'),
        (0 <= config.discount < 1, f'agent.discount must be in [0, 1), got {config.discount}'),
        (
            len(config.hidden_dims) >= 1 and all(w >= 1 for w in config.hidden_dims),
            f'agent.hidden_dims must be positive widths like 512,512, got {config.hidden_dims}',
        ),
    ]
    # inf passes the range checks of the fields bounded on one side (sigma > 0, beta >= 0, lr > 0, ...).
    values = [(f.name, getattr(config, f.name)) for f in dataclasses.fields(config)]
    checks += [(math.isfinite(v), f'agent.{k} must be finite, got {v}') for k, v in values if isinstance(v, float)]
    if hasattr(config, 'tau'):
        checks.append((0 < config.tau <= 1, f'agent.tau must be in (0, 1], got {config.tau}'))
    if hasattr(config, 'num_qs'):
        checks.append((config.num_qs >= 1, f'agent.num_qs must be >= 1, got {config.num_qs}'))
    if hasattr(config, 'q_agg'):
        checks.append((config.q_agg in ('mean', 'min'), f"agent.q_agg must be 'mean' or 'min', got '{config.q_agg}'"))
    return checks


def train_state(module, params, lr):
    """A TrainState with Adam at learning rate `lr` (every agent's optimizer)."""
    return TrainState.create(apply_fn=module.apply, params=params, tx=optax.adam(lr))


def polyak(online_params, target_params, tau):
    """τ · online + (1 − τ) · target, leaf by leaf. Every agent passes the online parameters from before
    the step's gradient update, as the reference code's `target_update` does (it reads `self.network`)."""
    return optax.incremental_update(online_params, target_params, tau)


def flow_matching_loss(velocity_fn, observations, actions, rng):
    """BC flow matching: the mean over the batch and the action dimensions of (v(s, x_t, t) − (x_1 − x_0))²,
    x_1 the data action, x_0 ~ N(0, I), t ~ U(0, 1) and x_t = (1 − t)·x_0 + t·x_1."""
    noise_key, time_key = jax.random.split(rng)
    x0 = jax.random.normal(noise_key, actions.shape)
    t = jax.random.uniform(time_key, actions.shape[:-1] + (1,))
    xt = (1 - t) * x0 + t * actions
    return jnp.mean((velocity_fn(observations, xt, t) - (actions - x0)) ** 2)


def flow_actions(velocity_fn, observations, noises, steps):
    """Actions from noises by `steps` Euler steps of the flow dx/dt = v(s, x, t), clipped to [-1, 1].
    The steps are unrolled (a Python loop): XLA's cost analysis counts a loop's body once, so a
    `fori_loop` here hid all but one step from the FLOP count of launch/bench.py."""
    x = noises
    for i in range(steps):
        x = x + velocity_fn(observations, x, jnp.full(x.shape[:-1] + (1,), i / steps)) / steps
    return jnp.clip(x, -1.0, 1.0)


def expectile_loss(diff, expectile):
    """Asymmetric squared loss |τ − 1(u < 0)|·u² of u = target − prediction; its minimizer is the
    τ-expectile of the target."""
    weight = jnp.where(diff >= 0, expectile, 1 - expectile)
    return weight * diff**2


def gaussian_log_prob(x, mean, log_std):
    """log N(x; mean, diag(exp(log_std))²), summed over the last (action) axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def tanh_log_det(u):
    """Σ log(1 − tanh(u)²) over the last axis, in the form 2(log 2 − u − softplus(−2u)) that stays finite
    where tanh saturates: the change-of-variables term of a = tanh(u)."""
    return jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def static_field():
    """A dataclass field of an agent PyTree that is not a traced leaf (its config, sizes)."""
    return flax.struct.field(pytree_node=False)
