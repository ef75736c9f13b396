"""ReBRAC (Tarasov et al., 2023): TD3+BC with LayerNorm critics and separate actor and critic BC penalties,
as the FQL paper ran it as a baseline.

Per update, on one batch (a' the dataset's next action, Q̄/π̄ the target critic/actor):
  critic: y = r + γ·mask·( min_i Q̄_i(s', ã) − α_critic·||ã − a'||² ),  ã = clip(π̄(s') + clip(ε, ±c), −1, 1),
          ε ~ N(0, σ²);   L_Q = E[ mean_i (Q_i(s, a) − y)² ]
  actor (every `actor_freq` updates): L_π = −E[ λ·min_i Q_i(s, π(s)) ] + α_actor·E[ ||π(s) − a||² ],
          λ = 1 / E|min_i Q_i(s, π(s))| (no gradient), π(s) = tanh(MLP(s)).
The target actor and critic move by Polyak averaging on the actor's updates only. The update count lives
in the agent, and the skipped actor updates are masked (not branched), so the agent scans and vmaps. As in
FQL's code, where one Adam holds all parameters, the actor's Adam still steps (with a zero gradient) on
the updates between actor updates.
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

from agents.common import check_settings, common_checks, polyak, static_field, td_target, train_state
from agents.networks import CriticEnsemble, GaussianActor

# (α_actor, α_critic) per environment. Source: the FQL paper's (Park et al., ICML 2025) appendix table of
# baseline hyperparameters; humanoidmaze-medium (0.01, 0.01) is also in the FQL README's run commands and
# cube-single (1, 1) in InFOM's (Zheng et al., 2025); docs/agents.md says which values were checked where.
# The D4RL AntMaze tasks take ReBRAC's own per-dataset values (Tarasov et al., 2023, its authors' configs); its
# other D4RL settings (3×256 networks, γ 0.999, a smaller critic learning rate) are not taken. Offline = O2O.
BC_COEFFICIENTS = {
    'antmaze-large-navigate': (0.003, 0.01),
    'antmaze-giant-navigate': (0.003, 0.01),
    'humanoidmaze-medium-navigate': (0.01, 0.01),
    'humanoidmaze-large-navigate': (0.01, 0.01),
    'antsoccer-arena-navigate': (0.01, 0.01),
    'cube-single-play': (1.0, 1.0),
    'cube-double-play': (0.1, 0.0),
    'scene-play': (0.1, 0.01),
    'puzzle-3x3-play': (0.3, 0.01),
    'puzzle-4x4-play': (0.3, 0.01),
    'antmaze-umaze-v2': (0.003, 0.002),
    'antmaze-umaze-diverse-v2': (0.003, 0.0005),
    'antmaze-medium-play-v2': (0.003, 0.0),
    'antmaze-medium-diverse-v2': (0.002, 0.0005),
    'antmaze-large-play-v2': (0.002, 0.002),
    'antmaze-large-diverse-v2': (0.002, 0.002),
}


@dataclasses.dataclass(frozen=True)
class ReBRACConfig:
    lr: float = 3e-4
    batch_size: int = 256
    hidden_dims: tuple = (512, 512, 512, 512)
    actor_layer_norm: bool = False
    critic_layer_norm: bool = True
    num_qs: int = 2
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target actor and critic
    alpha_actor: float = 0.0  # BC weight in the actor loss
    alpha_critic: float = 0.0  # BC weight in the critic target
    actor_freq: int = 2  # the actor (and the targets) update every `actor_freq` updates
    actor_noise: float = 0.2  # σ of the target policy smoothing noise (and of the exploration noise)
    actor_noise_clip: float = 0.5

    def validate(self):
        """Raises ValueError with a one-line message on the first invalid setting."""
        check_settings(
            [
                (self.alpha_actor >= 0, f'agent.alpha_actor must be >= 0, got {self.alpha_actor}'),
                (self.alpha_critic >= 0, f'agent.alpha_critic must be >= 0, got {self.alpha_critic}'),
                (self.actor_freq >= 1, f'agent.actor_freq must be >= 1, got {self.actor_freq}'),
                (self.actor_noise >= 0, f'agent.actor_noise must be >= 0, got {self.actor_noise}'),
                (self.actor_noise_clip >= 0, f'agent.actor_noise_clip must be >= 0, got {self.actor_noise_clip}'),
                *common_checks(self),
            ]
        )
        return self


def get_config(family, overrides=None, mode='offline'):
    """ReBRAC's config for a registry Family (its discount, α_actor and α_critic), then the user's overrides.

    The FQL paper used the same ReBRAC settings offline and O2O, so `mode` changes nothing."""
    alpha_actor, alpha_critic = BC_COEFFICIENTS[family.name]
    defaults = dict(discount=family.discount, alpha_actor=alpha_actor, alpha_critic=alpha_critic)
    return ReBRACConfig(**{**defaults, **dict(overrides or {})}).validate()


class ReBRACAgent(flax.struct.PyTreeNode):
    rng: Any
    actor: TrainState
    critic: TrainState
    target_actor_params: dict
    target_critic_params: dict
    updates: Any  # int32 count of updates done, for the delayed actor updates
    config: ReBRACConfig = static_field()

    @classmethod
    def create(cls, seed, example_observations, example_actions, config: ReBRACConfig):
        """Builds the agent from a seed (or key), example (batch, dim) arrays and a validated config."""
        config.validate()
        rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
        rng, actor_key, critic_key = jax.random.split(rng, 3)
        actor_net = GaussianActor(config.hidden_dims, example_actions.shape[-1], config.actor_layer_norm)
        critic_net = CriticEnsemble(config.hidden_dims, config.num_qs, config.critic_layer_norm)
        actor_params = actor_net.init(actor_key, example_observations)
        critic_params = critic_net.init(critic_key, example_observations, example_actions)
        return cls(
            rng=rng,
            actor=train_state(actor_net, actor_params, config.lr),
            critic=train_state(critic_net, critic_params, config.lr),
            target_actor_params=actor_params,
            target_critic_params=critic_params,
            updates=jnp.zeros((), jnp.int32),
            config=config,
        )

    def _policy(self, actor_params, observations):
        """The deterministic actor tanh(mean) in (−1, 1)."""
        return jnp.tanh(self.actor.apply_fn(actor_params, observations)[0])

    def _smoothing_noise(self, rng, shape):
        noise = self.config.actor_noise * jax.random.normal(rng, shape)
        return jnp.clip(noise, -self.config.actor_noise_clip, self.config.actor_noise_clip)

    def eval_actions(self, observations, rng):
        """The deterministic actor's action (FQL evaluates at temperature 0)."""
        return self._policy(self.actor.params, observations)

    def sample_actions(self, observations, rng):
        """The actor's action plus clipped Gaussian exploration noise, clipped to [-1, 1]."""
        actions = self._policy(self.actor.params, observations)
        return jnp.clip(actions + self._smoothing_noise(rng, actions.shape), -1.0, 1.0)

    def _critic_loss(self, critic_params, batch, rng):
        next_observations = batch['next_observations']
        next_actions = self._policy(self.target_actor_params, next_observations)
        next_actions = jnp.clip(next_actions + self._smoothing_noise(rng, next_actions.shape), -1.0, 1.0)
        next_q = self.critic.apply_fn(self.target_critic_params, next_observations, next_actions).min(0)
        next_q -= self.config.alpha_critic * jnp.sum((next_actions - batch['next_actions']) ** 2, -1)
        target = td_target(batch, self.config.discount, next_q)
        qs = self.critic.apply_fn(critic_params, batch['observations'], batch['actions'])
        loss = jnp.mean((qs - target) ** 2)
        return loss, dict(critic_loss=loss, q_mean=qs.mean(), q_max=qs.max(), q_min=qs.min())

    def _actor_loss(self, actor_params, batch):
        actions = self._policy(actor_params, batch['observations'])
        q = self.critic.apply_fn(self.critic.params, batch['observations'], actions).min(0)
        q_scale = jax.lax.stop_gradient(1.0 / jnp.abs(q).mean())  # makes α_actor independent of Q's scale
        q_loss = -(q_scale * q).mean()
        bc_loss = self.config.alpha_actor * jnp.sum((actions - batch['actions']) ** 2, -1).mean()
        return q_loss + bc_loss, dict(actor_loss=q_loss + bc_loss, actor_q_loss=q_loss, bc_loss=bc_loss)

    @jax.jit
    def update(self, batch):
        """One critic step, and every `actor_freq`-th time an actor step and target updates."""
        rng, critic_key = jax.random.split(self.rng)
        updates = self.updates + 1
        actor_step = (updates % self.config.actor_freq == 0).astype(jnp.float32)
        critic_grads, critic_info = jax.grad(self._critic_loss, has_aux=True)(self.critic.params, batch, critic_key)
        actor_grads, actor_info = jax.grad(self._actor_loss, has_aux=True)(self.actor.params, batch)
        actor_grads = jax.tree_util.tree_map(lambda g: actor_step * g, actor_grads)
        critic = self.critic.apply_gradients(grads=critic_grads)
        actor = self.actor.apply_gradients(grads=actor_grads)
        tau = actor_step * self.config.tau  # 0 between actor updates: the targets stay
        agent = self.replace(
            rng=rng,
            actor=actor,
            critic=critic,
            target_actor_params=polyak(self.actor.params, self.target_actor_params, tau),
            target_critic_params=polyak(self.critic.params, self.target_critic_params, tau),
            updates=updates,
        )
        return agent, {**critic_info, **actor_info, 'actor_updated': actor_step}


Agent = ReBRACAgent
Config = ReBRACConfig
