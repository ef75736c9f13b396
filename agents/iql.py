"""IQL (implicit Q-learning, Kostrikov et al. 2022) as the FQL paper ran it as a baseline.

Per update, on one batch, every loss at the parameters before the update:
  value:  L_V = E[ |τ − 1(u < 0)|·u² ],  u = min_i Q̄_i(s, a) − V(s)   (Q̄: target critic, τ: expectile)
  critic: L_Q = E[ Σ_i (Q_i(s, a) − (r + γ·mask·V(s')))² ]
  actor:  L_π = −E[ min(exp(α·(min_i Q_i(s, a) − V(s))), 100) · log π(a|s) ]   (advantage-weighted regression)
The actor is a Gaussian with a state-independent unit std (FQL's `const_std`); it acts with its mean in
evaluation and samples (then clips) when collecting online data. Target critic by Polyak averaging.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from agents.common import (
    check_settings,
    common_checks,
    expectile_loss,
    gaussian_log_prob,
    polyak,
    static_field,
    train_state,
)
from agents.networks import CriticEnsemble, GaussianActor, ValueNet

# AWR inverse temperature α per environment. Source: the FQL paper's (Park et al., ICML 2025) appendix table
# of baseline hyperparameters; humanoidmaze-medium (10) is also in the FQL README's run commands and
# cube-single (1) in InFOM's (Zheng et al., 2025); docs/agents.md says which values were checked where. The
# D4RL AntMaze tasks use α = 10, IQL's own AntMaze setting (Kostrikov et al., 2022). Offline = O2O.
AWR_ALPHA = {
    'antmaze-large-navigate': 10.0,
    'antmaze-giant-navigate': 10.0,
    'humanoidmaze-medium-navigate': 10.0,
    'humanoidmaze-large-navigate': 10.0,
    'antsoccer-arena-navigate': 1.0,
    'cube-single-play': 1.0,
    'cube-double-play': 0.3,
    'scene-play': 10.0,
    'puzzle-3x3-play': 10.0,
    'puzzle-4x4-play': 3.0,
    'antmaze-umaze-v2': 10.0,
    'antmaze-umaze-diverse-v2': 10.0,
    'antmaze-medium-play-v2': 10.0,
    'antmaze-medium-diverse-v2': 10.0,
    'antmaze-large-play-v2': 10.0,
    'antmaze-large-diverse-v2': 10.0,
}
MAX_AWR_WEIGHT = 100.0  # exp-advantage weights are clipped here (FQL's and IQL's code)


@dataclasses.dataclass(frozen=True)
class IQLConfig:
    lr: float = 3e-4
    batch_size: int = 256
    hidden_dims: tuple = (512, 512, 512, 512)
    actor_layer_norm: bool = False
    critic_layer_norm: bool = True  # value and Q networks
    num_qs: int = 2
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critic
    expectile: float = 0.9
    alpha: float = 10.0  # AWR inverse temperature

    def validate(self):
        """Raises ValueError with a one-line message on the first invalid setting."""
        check_settings(
            [
                (0 < self.expectile < 1, f'agent.expectile must be in (0, 1), got {self.expectile}'),
                (self.alpha >= 0, f'agent.alpha must be >= 0, got {self.alpha}'),
                *common_checks(self),
            ]
        )
        return self


def get_config(family, overrides=None, mode='offline'):
    """IQL's config for a registry Family (its discount and AWR α), then the user's overrides.

    The FQL paper used the same IQL settings offline and O2O, so `mode` changes nothing."""
    defaults = dict(discount=family.discount, alpha=AWR_ALPHA[family.name])
    return IQLConfig(**{**defaults, **dict(overrides or {})}).validate()


class IQLAgent(flax.struct.PyTreeNode):
    actor: TrainState
    critic: TrainState
    target_critic_params: dict
    value: TrainState
    config: IQLConfig = static_field()

    @classmethod
    def create(cls, seed, example_observations, example_actions, config: IQLConfig):
        """Builds the agent from a seed (or key), example (batch, dim) arrays and a validated config."""
        config.validate()
        rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
        actor_key, critic_key, value_key = jax.random.split(rng, 3)
        actor_net = GaussianActor(config.hidden_dims, example_actions.shape[-1], config.actor_layer_norm)
        critic_net = CriticEnsemble(config.hidden_dims, config.num_qs, config.critic_layer_norm)
        value_net = ValueNet(config.hidden_dims, config.critic_layer_norm)
        critic_params = critic_net.init(critic_key, example_observations, example_actions)
        return cls(
            actor=train_state(actor_net, actor_net.init(actor_key, example_observations), config.lr),
            critic=train_state(critic_net, critic_params, config.lr),
            target_critic_params=critic_params,
            value=train_state(value_net, value_net.init(value_key, example_observations), config.lr),
            config=config,
        )

    def eval_actions(self, observations, rng):
        """The Gaussian's mean, clipped to [-1, 1] (FQL evaluates at temperature 0)."""
        mean, _ = self.actor.apply_fn(self.actor.params, observations)
        return jnp.clip(mean, -1.0, 1.0)

    def sample_actions(self, observations, rng):
        """A Gaussian sample clipped to [-1, 1], for batched or single observations."""
        mean, log_std = self.actor.apply_fn(self.actor.params, observations)
        return jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape), -1.0, 1.0)

    def _value_loss(self, value_params, batch):
        q = self.critic.apply_fn(self.target_critic_params, batch['observations'], batch['actions']).min(0)
        v = self.value.apply_fn(value_params, batch['observations'])
        loss = expectile_loss(q - v, self.config.expectile).mean()
        return loss, dict(value_loss=loss, v_mean=v.mean())

    def _critic_loss(self, critic_params, batch):
        next_v = self.value.apply_fn(self.value.params, batch['next_observations'])
        target = batch['rewards'] + self.config.discount * batch['masks'] * next_v
        qs = self.critic.apply_fn(critic_params, batch['observations'], batch['actions'])
        loss = ((qs - target) ** 2).sum(0).mean()  # summed over the ensemble, as in FQL's IQL
        return loss, dict(critic_loss=loss, q_mean=qs.mean(), q_max=qs.max(), q_min=qs.min())

    def _actor_loss(self, actor_params, batch):
        v = self.value.apply_fn(self.value.params, batch['observations'])
        q = self.critic.apply_fn(self.critic.params, batch['observations'], batch['actions']).min(0)
        advantage = q - v
        weights = jnp.minimum(jnp.exp(self.config.alpha * advantage), MAX_AWR_WEIGHT)
        mean, log_std = self.actor.apply_fn(actor_params, batch['observations'])
        log_prob = gaussian_log_prob(batch['actions'], mean, log_std)
        loss = -(weights * log_prob).mean()
        info = dict(actor_loss=loss, advantage=advantage.mean(), bc_log_prob=log_prob.mean())
        info['mse'] = jnp.mean((mean - batch['actions']) ** 2)
        return loss, info

    @jax.jit
    def update(self, batch):
        """One step on the value, the critic and the actor: returns (new agent, metrics)."""
        value_grads, value_info = jax.grad(self._value_loss, has_aux=True)(self.value.params, batch)
        critic_grads, critic_info = jax.grad(self._critic_loss, has_aux=True)(self.critic.params, batch)
        actor_grads, actor_info = jax.grad(self._actor_loss, has_aux=True)(self.actor.params, batch)
        critic = self.critic.apply_gradients(grads=critic_grads)
        agent = self.replace(
            actor=self.actor.apply_gradients(grads=actor_grads),
            critic=critic,
            target_critic_params=polyak(self.critic.params, self.target_critic_params, self.config.tau),
            value=self.value.apply_gradients(grads=value_grads),
        )
        return agent, {**value_info, **critic_info, **actor_info}


Agent = IQLAgent
Config = IQLConfig
