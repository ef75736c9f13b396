"""SAC (Haarnoja et al., 2018) with a LayerNorm critic ensemble and a learned temperature, as in FQL's code;
with balanced offline/online batches and no offline phase it is the RLPD baseline (`--agent rlpd`).

Per update, on one batch (a = tanh(u), u ~ N(μ(s), σ(s)²): a tanh-Gaussian policy; Q̄ the target critic):
  critic:      y = r + γ·mask·agg_i Q̄_i(s', a'),  a' ~ π(·|s');   L_Q = E[ mean_i (Q_i(s, a) − y)² ]
  actor:       L_π = E[ α·log π(ã|s) − mean_i Q_i(s, ã) ],  ã ~ π(·|s) (reparameterized)
  temperature: L_α = α·(H − H_target),  H = −E[log π(ã|s)] (no gradient),  H_target = −m·|A|
(no entropy term in the target, FQL's `backup_entropy=False`). Target critic by Polyak averaging.
"""

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from agents.common import (
    aggregate_q,
    check_settings,
    common_checks,
    gaussian_log_prob,
    polyak,
    static_field,
    tanh_log_det,
    td_target,
    train_state,
)
from agents.networks import CriticEnsemble, GaussianActor


@dataclasses.dataclass(frozen=True)
class SACConfig:
    # Source: FQL's sac.py defaults, also its RLPD settings (FQL's RLPD command changes only the discount):
    # 2 critics, q_agg min, one update per env step (RLPD's paper used 10 critics and 20 updates per step).
    lr: float = 3e-4
    batch_size: int = 256
    hidden_dims: tuple = (512, 512, 512, 512)
    actor_layer_norm: bool = False
    critic_layer_norm: bool = True
    num_qs: int = 2
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critic
    q_agg: str = 'min'  # how the target aggregates the ensemble: 'mean' or 'min'
    target_entropy_multiplier: float = 0.5  # H_target = −multiplier · action_dim
    initial_temperature: float = 1.0

    def validate(self):
        """Raises ValueError with a one-line message on the first invalid setting."""
        check_settings(
            [
                (
                    self.target_entropy_multiplier >= 0,
                    f'agent.target_entropy_multiplier must be >= 0, got {self.target_entropy_multiplier}',
                ),
                (
                    self.initial_temperature > 0,
                    f'agent.initial_temperature must be > 0, got {self.initial_temperature}',
                ),
                *common_checks(self),
            ]
        )
        return self


def get_config(family, overrides=None, mode='offline'):
    """SAC's config for a registry Family (only the discount is per environment), then the user's overrides.

    The same settings serve offline, O2O and RLPD, so `mode` changes nothing."""
    return SACConfig(**{'discount': family.discount, **dict(overrides or {})}).validate()


class Temperature(nn.Module):
    """The entropy temperature α, learned through its logarithm."""

    initial_value: float = 1.0

    @nn.compact
    def __call__(self):
        log_alpha = self.param('log_alpha', nn.initializers.constant(jnp.log(self.initial_value)), ())
        return jnp.exp(log_alpha)


class SACAgent(flax.struct.PyTreeNode):
    rng: Any
    actor: TrainState
    critic: TrainState
    target_critic_params: dict
    temperature: TrainState
    config: SACConfig = static_field()
    target_entropy: float = static_field()

    @classmethod
    def create(cls, seed, example_observations, example_actions, config: SACConfig):
        """Builds the agent from a seed (or key), example (batch, dim) arrays and a validated config."""
        config.validate()
        rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
        rng, actor_key, critic_key = jax.random.split(rng, 3)
        action_dim = example_actions.shape[-1]
        actor_net = GaussianActor(config.hidden_dims, action_dim, config.actor_layer_norm, state_dependent_std=True)
        critic_net = CriticEnsemble(config.hidden_dims, config.num_qs, config.critic_layer_norm)
        temperature_net = Temperature(config.initial_temperature)
        critic_params = critic_net.init(critic_key, example_observations, example_actions)
        return cls(
            rng=rng,
            actor=train_state(actor_net, actor_net.init(actor_key, example_observations), config.lr),
            critic=train_state(critic_net, critic_params, config.lr),
            target_critic_params=critic_params,
            temperature=train_state(temperature_net, temperature_net.init(rng), config.lr),
            config=config,
            target_entropy=-config.target_entropy_multiplier * action_dim,
        )

    def _sample_with_log_prob(self, actor_params, observations, rng):
        """a = tanh(u), u ~ N(μ(s), σ(s)²) reparameterized, and log π(a|s) with the tanh correction."""
        mean, log_std = self.actor.apply_fn(actor_params, observations)
        u = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)
        return jnp.tanh(u), gaussian_log_prob(u, mean, log_std) - tanh_log_det(u)

    def eval_actions(self, observations, rng):
        """tanh of the Gaussian's mean (FQL evaluates at temperature 0)."""
        return jnp.tanh(self.actor.apply_fn(self.actor.params, observations)[0])

    def sample_actions(self, observations, rng):
        """A tanh-Gaussian sample in [-1, 1], for batched or single observations."""
        return jnp.clip(self._sample_with_log_prob(self.actor.params, observations, rng)[0], -1.0, 1.0)

    def _critic_loss(self, critic_params, batch, rng):
        next_actions, _ = self._sample_with_log_prob(self.actor.params, batch['next_observations'], rng)
        next_qs = self.critic.apply_fn(self.target_critic_params, batch['next_observations'], next_actions)
        target = td_target(batch, self.config.discount, aggregate_q(next_qs, self.config.q_agg))
        qs = self.critic.apply_fn(critic_params, batch['observations'], batch['actions'])
        loss = jnp.mean((qs - target) ** 2)
        return loss, dict(critic_loss=loss, q_mean=qs.mean(), q_max=qs.max(), q_min=qs.min())

    def _actor_loss(self, actor_params, batch, rng):
        actions, log_probs = self._sample_with_log_prob(actor_params, batch['observations'], rng)
        q = self.critic.apply_fn(self.critic.params, batch['observations'], actions).mean(0)
        alpha = self.temperature.apply_fn(self.temperature.params)
        loss = (alpha * log_probs - q).mean()
        return loss, dict(actor_loss=loss, entropy=-log_probs.mean(), actor_q=q.mean())

    def _temperature_loss(self, temperature_params, entropy):
        alpha = self.temperature.apply_fn(temperature_params)
        loss = alpha * (entropy - self.target_entropy)
        return loss, dict(temperature_loss=loss, alpha=alpha)

    @jax.jit
    def update(self, batch):
        """One step on the critic, the actor and the temperature: returns (new agent, metrics)."""
        rng, critic_key, actor_key = jax.random.split(self.rng, 3)
        critic_grads, critic_info = jax.grad(self._critic_loss, has_aux=True)(self.critic.params, batch, critic_key)
        actor_grads, actor_info = jax.grad(self._actor_loss, has_aux=True)(self.actor.params, batch, actor_key)
        temperature_grads, temperature_info = jax.grad(self._temperature_loss, has_aux=True)(
            self.temperature.params, jax.lax.stop_gradient(actor_info['entropy'])
        )
        critic = self.critic.apply_gradients(grads=critic_grads)
        agent = self.replace(
            rng=rng,
            actor=self.actor.apply_gradients(grads=actor_grads),
            critic=critic,
            target_critic_params=polyak(self.critic.params, self.target_critic_params, self.config.tau),
            temperature=self.temperature.apply_gradients(grads=temperature_grads),
        )
        return agent, {**critic_info, **actor_info, **temperature_info}


Agent = SACAgent
Config = SACConfig
