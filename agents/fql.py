"""FQL (flow Q-learning; Park, Li and Levine, ICML 2025): a BC flow policy and a one-step policy distilled from it.

Per update, on one batch:
- critic: L = mean_k (Q_k(s, a) − y)², y = r + γ·mask·agg_k Q̄_k(s', μ(s', z')), z' ~ N(0, I);
- BC flow: the flow-matching loss on the dataset actions (10 Euler steps to sample);
- one-step policy μ(s, z): L = α·||μ(s, z) − sg(flow(s, z))||² − λ·mean_k Q_k(s, clip(μ(s, z))),
  λ = sg(1 / mean|Q|) with normalize_q_loss, else 1 (the paper's setting, for which its α were tuned).
The agent acts with clip(μ(s, z)), one network call per action.
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from agents.common import (
    aggregate_q,
    check_settings,
    common_checks,
    flow_actions,
    flow_matching_loss,
    polyak,
    static_field,
    td_target,
    train_state,
)
from agents.networks import MLP, CriticEnsemble, FlowVelocity

# α (the distillation weight) per environment, from the FQL paper (ICML 2025) and the exact commands of
# its public code's README (github.com/seohongpark/fql, "Reproducing the main results").
OFFLINE_ALPHA = {
    'antmaze-large-navigate': 10.0,
    'antmaze-giant-navigate': 10.0,
    'humanoidmaze-medium-navigate': 30.0,
    'humanoidmaze-large-navigate': 30.0,
    'antsoccer-arena-navigate': 10.0,
    'cube-single-play': 300.0,
    'cube-double-play': 300.0,
    'scene-play': 300.0,
    'puzzle-3x3-play': 1000.0,
    'puzzle-4x4-play': 1000.0,
    'antmaze-umaze-v2': 10.0,
    'antmaze-umaze-diverse-v2': 10.0,
    'antmaze-medium-play-v2': 10.0,
    'antmaze-medium-diverse-v2': 10.0,
    'antmaze-large-play-v2': 3.0,
    'antmaze-large-diverse-v2': 3.0,
}
# Offline-to-online runs differ only here (same source, "Offline-to-online RL" commands). Those commands have
# no antmaze-giant or humanoidmaze-large run, so those two keep their offline α (docs/agents.md).
O2O_ALPHA = {**OFFLINE_ALPHA, 'humanoidmaze-medium-navigate': 100.0, 'antsoccer-arena-navigate': 30.0}


@dataclasses.dataclass(frozen=True)
class FQLConfig:
    # Defaults of the public FQL code (agents/fql.py get_config).
    lr: float = 3e-4
    batch_size: int = 256
    hidden_dims: tuple = (512, 512, 512, 512)  # every network: critic, BC flow, one-step policy
    actor_layer_norm: bool = False
    critic_layer_norm: bool = True
    num_qs: int = 2
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critic
    q_agg: str = 'mean'  # how the TD target aggregates the ensemble: 'mean' or 'min'
    alpha: float = 10.0  # distillation weight; per environment (OFFLINE_ALPHA / O2O_ALPHA)
    flow_steps: int = 10  # Euler steps of the BC flow
    normalize_q_loss: bool = False  # λ = 1/mean|Q| on the Q term (off in the paper's runs)

    def validate(self):
        """Raises ValueError with a one-line message on the first invalid setting."""
        check_settings(
            [
                (self.alpha >= 0, f'agent.alpha must be >= 0, got {self.alpha}'),
                (self.flow_steps >= 1, f'agent.flow_steps must be >= 1, got {self.flow_steps}'),
                *common_checks(self),
            ]
        )
        return self


def get_config(family, overrides=None, mode='offline'):
    """FQL's config for a registry Family (α by `mode`, 'offline' or 'o2o'; γ and Q aggregation from the
    family), then the user's overrides (a dict of field values)."""
    alphas = O2O_ALPHA if mode == 'o2o' else OFFLINE_ALPHA
    defaults = dict(alpha=alphas[family.name], discount=family.discount, q_agg=family.q_agg)
    return FQLConfig(**{**defaults, **dict(overrides or {})}).validate()


class FQLAgent(flax.struct.PyTreeNode):
    rng: Any
    actor: TrainState  # one-step policy μ(s, z): an MLP on [s, z]
    bc_flow: TrainState  # velocity field of the BC flow policy
    critic: TrainState
    target_critic_params: Any
    config: FQLConfig = static_field()
    action_dim: int = static_field()

    @classmethod
    def create(cls, seed, example_observations, example_actions, config: FQLConfig):
        """Builds the agent from a seed (int or key), example (batch, dim) arrays and a validated config."""
        config.validate()
        rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
        rng, actor_key, flow_key, critic_key = jax.random.split(rng, 4)
        action_dim = example_actions.shape[-1]

        actor_net = MLP(config.hidden_dims, action_dim, config.actor_layer_norm)
        actor_params = actor_net.init(actor_key, jnp.concatenate([example_observations, example_actions], -1))
        flow_net = FlowVelocity(config.hidden_dims, action_dim, config.actor_layer_norm)
        flow_params = flow_net.init(flow_key, example_observations, example_actions, example_actions[..., :1])
        critic_net = CriticEnsemble(config.hidden_dims, config.num_qs, config.critic_layer_norm)
        critic_params = critic_net.init(critic_key, example_observations, example_actions)
        return cls(
            rng=rng,
            actor=train_state(actor_net, actor_params, config.lr),
            bc_flow=train_state(flow_net, flow_params, config.lr),
            critic=train_state(critic_net, critic_params, config.lr),
            target_critic_params=critic_params,
            config=config,
            action_dim=action_dim,
        )

    def _one_step(self, actor_params, observations, noises):
        """μ(s, z), unclipped (the distillation compares it unclipped, as FQL does)."""
        return self.actor.apply_fn(actor_params, jnp.concatenate([observations, noises], -1))

    def flow_actions(self, observations, noises):
        """The BC flow policy's actions for the given noises (Euler integration, clipped to [-1, 1])."""

        def velocity(s, x, t):
            return self.bc_flow.apply_fn(self.bc_flow.params, s, x, t)

        return flow_actions(velocity, observations, noises, self.config.flow_steps)

    def sample_actions(self, observations, rng):
        """One action per observation (batched or single) from the one-step policy, in [-1, 1]."""
        noises = jax.random.normal(rng, observations.shape[:-1] + (self.action_dim,))
        return jnp.clip(self._one_step(self.actor.params, observations, noises), -1.0, 1.0)

    def _critic_loss(self, critic_params, batch, rng):
        next_actions = self.sample_actions(batch['next_observations'], rng)
        next_qs = self.critic.apply_fn(self.target_critic_params, batch['next_observations'], next_actions)
        target = td_target(batch, self.config.discount, aggregate_q(next_qs, self.config.q_agg))
        qs = self.critic.apply_fn(critic_params, batch['observations'], batch['actions'])
        loss = jnp.mean((qs - jax.lax.stop_gradient(target)) ** 2)
        return loss, dict(critic_loss=loss, q_mean=qs.mean(), q_max=qs.max(), q_min=qs.min())

    def _bc_flow_loss(self, flow_params, batch, rng):
        def velocity(s, x, t):
            return self.bc_flow.apply_fn(flow_params, s, x, t)

        loss = flow_matching_loss(velocity, batch['observations'], batch['actions'], rng)
        return loss, dict(bc_flow_loss=loss)

    def _actor_loss(self, actor_params, batch, rng):
        observations = batch['observations']
        noises = jax.random.normal(rng, observations.shape[:-1] + (self.action_dim,))
        target_actions = jax.lax.stop_gradient(self.flow_actions(observations, noises))
        actions = self._one_step(actor_params, observations, noises)
        distill_loss = jnp.mean((actions - target_actions) ** 2)
        # The critic is held fixed here: its own loss trains it.
        q = self.critic.apply_fn(self.critic.params, observations, jnp.clip(actions, -1.0, 1.0)).mean(0)
        q_loss = -q.mean()
        if self.config.normalize_q_loss:
            q_loss = q_loss * jax.lax.stop_gradient(1.0 / jnp.abs(q).mean())
        loss = self.config.alpha * distill_loss + q_loss
        return loss, dict(actor_loss=loss, distill_loss=distill_loss, q_loss=q_loss, policy_q=q.mean())

    @jax.jit
    def update(self, batch):
        """One step on the critic, the BC flow and the one-step policy, all from the same current
        parameters (as FQL's single summed loss does); returns (new agent, metrics)."""
        rng, critic_key, flow_key, actor_key = jax.random.split(self.rng, 4)
        critic_grads, critic_info = jax.grad(self._critic_loss, has_aux=True)(self.critic.params, batch, critic_key)
        flow_grads, flow_info = jax.grad(self._bc_flow_loss, has_aux=True)(self.bc_flow.params, batch, flow_key)
        actor_grads, actor_info = jax.grad(self._actor_loss, has_aux=True)(self.actor.params, batch, actor_key)
        critic = self.critic.apply_gradients(grads=critic_grads)
        agent = self.replace(
            rng=rng,
            actor=self.actor.apply_gradients(grads=actor_grads),
            bc_flow=self.bc_flow.apply_gradients(grads=flow_grads),
            critic=critic,
            target_critic_params=polyak(self.critic.params, self.target_critic_params, self.config.tau),
        )
        return agent, {**critic_info, **flow_info, **actor_info}


Agent = FQLAgent
Config = FQLConfig
