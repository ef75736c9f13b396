"""IFQL (implicit flow Q-learning; the flow counterpart of IDQL, as a baseline in the FQL paper, ICML 2025).

IQL's value learning with a BC flow policy that acts by rejection sampling. Per update, on one batch:
- value:  L_V = mean |τ − 1(u < 0)|·u², u = min_k Q̄_k(s, a) − V(s)   (τ = expectile, target critic);
- critic: L_Q = Σ_k mean (Q_k(s, a) − y)², y = r + γ·mask·V(s');
- BC flow: the flow-matching loss on the dataset actions.
To act: N flow samples per state (10 Euler steps each), and the one with the highest min_k Q_k(s, a).
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from agents.common import (
    check_settings,
    common_checks,
    expectile_loss,
    flow_actions,
    flow_matching_loss,
    polyak,
    static_field,
    td_target,
    train_state,
)
from agents.networks import CriticEnsemble, FlowVelocity, ValueNet

# N (samples per action) is 32 in every environment. The FQL paper's appendix gives IFQL's per-environment
# settings, but we could not find its table in any public text we could read; the one value found is its
# public code's README command for humanoidmaze-medium (offline and O2O): --agent.num_samples=32, which is
# also that code's default. Every environment uses that default and the code's expectile (0.9).


@dataclasses.dataclass(frozen=True)
class IFQLConfig:
    # Defaults of the public FQL code's IFQL (agents/ifql.py get_config).
    lr: float = 3e-4
    batch_size: int = 256
    hidden_dims: tuple = (512, 512, 512, 512)  # every network: value, critic, BC flow
    actor_layer_norm: bool = False
    critic_layer_norm: bool = True  # value and critic
    num_qs: int = 2
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critic
    expectile: float = 0.9  # τ of the value's expectile regression
    num_samples: int = 32  # N flow samples per action
    flow_steps: int = 10  # Euler steps of the BC flow

    def validate(self):
        """Raises ValueError with a one-line message on the first invalid setting."""
        check_settings(
            [
                (0 < self.expectile < 1, f'agent.expectile must be in (0, 1), got {self.expectile}'),
                (self.num_samples >= 1, f'agent.num_samples must be >= 1, got {self.num_samples}'),
                (self.flow_steps >= 1, f'agent.flow_steps must be >= 1, got {self.flow_steps}'),
                *common_checks(self),
            ]
        )
        return self


def get_config(family, overrides=None, mode='offline'):
    """IFQL's config for a registry Family (γ from the family), then the user's overrides (a dict of field
    values). IFQL uses the same settings offline and O2O (`mode`)."""
    defaults = dict(discount=family.discount)
    return IFQLConfig(**{**defaults, **dict(overrides or {})}).validate()


class IFQLAgent(flax.struct.PyTreeNode):
    rng: Any
    value: TrainState
    critic: TrainState
    target_critic_params: Any
    bc_flow: TrainState  # velocity field of the BC flow policy
    config: IFQLConfig = static_field()
    action_dim: int = static_field()

    @classmethod
    def create(cls, seed, example_observations, example_actions, config: IFQLConfig):
        """Builds the agent from a seed (int or key), example (batch, dim) arrays and a validated config."""
        config.validate()
        rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
        rng, value_key, critic_key, flow_key = jax.random.split(rng, 4)
        action_dim = example_actions.shape[-1]

        value_net = ValueNet(config.hidden_dims, config.critic_layer_norm)
        value_params = value_net.init(value_key, example_observations)
        critic_net = CriticEnsemble(config.hidden_dims, config.num_qs, config.critic_layer_norm)
        critic_params = critic_net.init(critic_key, example_observations, example_actions)
        flow_net = FlowVelocity(config.hidden_dims, action_dim, config.actor_layer_norm)
        flow_params = flow_net.init(flow_key, example_observations, example_actions, example_actions[..., :1])
        return cls(
            rng=rng,
            value=train_state(value_net, value_params, config.lr),
            critic=train_state(critic_net, critic_params, config.lr),
            target_critic_params=critic_params,
            bc_flow=train_state(flow_net, flow_params, config.lr),
            config=config,
            action_dim=action_dim,
        )

    def flow_actions(self, observations, noises):
        """The BC flow policy's actions for the given noises (Euler integration, clipped to [-1, 1])."""

        def velocity(s, x, t):
            return self.bc_flow.apply_fn(self.bc_flow.params, s, x, t)

        return flow_actions(velocity, observations, noises, self.config.flow_steps)

    def candidate_actions(self, observations, rng):
        """N flow samples per observation, (..., N, action_dim), and their min-over-ensemble Q, (..., N)."""
        observations = jnp.repeat(observations[..., None, :], self.config.num_samples, axis=-2)
        noises = jax.random.normal(rng, observations.shape[:-1] + (self.action_dim,))
        actions = self.flow_actions(observations, noises)
        return actions, self.critic.apply_fn(self.critic.params, observations, actions).min(0)

    def sample_actions(self, observations, rng):
        """The highest-Q of N flow samples per observation (batched or single), in [-1, 1]."""
        actions, qs = self.candidate_actions(observations, rng)
        best = jnp.argmax(qs, axis=-1)
        return jnp.take_along_axis(actions, best[..., None, None], axis=-2)[..., 0, :]

    def _value_loss(self, value_params, batch):
        q = self.critic.apply_fn(self.target_critic_params, batch['observations'], batch['actions']).min(0)
        v = self.value.apply_fn(value_params, batch['observations'])
        loss = expectile_loss(q - v, self.config.expectile).mean()
        return loss, dict(value_loss=loss, v_mean=v.mean(), v_max=v.max(), v_min=v.min())

    def _critic_loss(self, critic_params, batch):
        next_v = self.value.apply_fn(self.value.params, batch['next_observations'])
        target = td_target(batch, self.config.discount, next_v)
        qs = self.critic.apply_fn(critic_params, batch['observations'], batch['actions'])
        loss = ((qs - target) ** 2).mean(-1).sum()  # summed over the ensemble, as in the public code
        return loss, dict(critic_loss=loss, q_mean=qs.mean(), q_max=qs.max(), q_min=qs.min())

    def _bc_flow_loss(self, flow_params, batch, rng):
        def velocity(s, x, t):
            return self.bc_flow.apply_fn(flow_params, s, x, t)

        loss = flow_matching_loss(velocity, batch['observations'], batch['actions'], rng)
        return loss, dict(bc_flow_loss=loss)

    @jax.jit
    def update(self, batch):
        """One step on the value, the critic and the BC flow, all from the same current parameters
        (as the public code's single summed loss does); returns (new agent, metrics)."""
        rng, flow_key = jax.random.split(self.rng)
        value_grads, value_info = jax.grad(self._value_loss, has_aux=True)(self.value.params, batch)
        critic_grads, critic_info = jax.grad(self._critic_loss, has_aux=True)(self.critic.params, batch)
        flow_grads, flow_info = jax.grad(self._bc_flow_loss, has_aux=True)(self.bc_flow.params, batch, flow_key)
        critic = self.critic.apply_gradients(grads=critic_grads)
        agent = self.replace(
            rng=rng,
            value=self.value.apply_gradients(grads=value_grads),
            critic=critic,
            target_critic_params=polyak(self.critic.params, self.target_critic_params, self.config.tau),
            bc_flow=self.bc_flow.apply_gradients(grads=flow_grads),
        )
        return agent, {**value_info, **critic_info, **flow_info}


Agent = IFQLAgent
Config = IFQLConfig
