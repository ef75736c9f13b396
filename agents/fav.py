"""FAV: a one-step generator actor trained by amortized SVGD toward p_ref(a|s)·exp(β Q(s, a)).

Per update (docs/algorithm.md, 'The FAV update'): draw M actor samples per state, compute the SVGD
direction φ that moves them toward the Q-tilted behavior distribution (KDE reference score + β∇Q,
kernel-smoothed, plus repulsion), and regress the actor onto the moved samples: L = mean_j ||sg(x_j + φ(x_j)) - x_j||².
The critic is a 2-network LayerNorm ensemble trained by TD with a Polyak-averaged target.
"""

import dataclasses
import functools
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
from agents.networks import CriticEnsemble, FlowVelocity, OneStepGenerator

PRIOR_SCORES = ('softmax', 'clipped')
CLIPPED_KERNEL_SUM = 1e-6  # the reference code's floor on Σ_i k(x, y_i)
RESIDUAL_STATES = 32  # states of the batch on which the after-update fixed-point residual is measured


@dataclasses.dataclass(frozen=True)
class FAVConfig:
    lr: float = 3e-4
    batch_size: int = 256
    hidden_dims: tuple = (512, 512, 512, 512)
    actor_layer_norm: bool = False
    critic_layer_norm: bool = True
    num_qs: int = 2
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critic
    q_agg: str = 'mean'  # how the target aggregates the ensemble: 'mean' or 'min'
    num_samples: int = 8  # M, generator samples per state
    bandwidth_method: str = 'fixed'  # 'fixed' (FAV, σ = sigma) or 'scott' (FAV-Adaptive)
    sigma: float = 0.5
    beta: float = 1.0
    reference: str = 'dataset'  # 'dataset' (the transition's action) or 'bc_flow' (K BC-flow samples)
    num_reference: int = 8  # K, reference samples per state with reference='bc_flow'
    flow_steps: int = 10  # Euler steps of the BC flow sampler
    # KDE prior score: 'clipped' = the public reference code's form (sum of kernels clipped at 1e-6, a pull
    # toward the origin far from the data; the published σ, β were tuned with it), 'softmax' = exact everywhere.
    prior_score: str = 'clipped'
    repulsive: bool = True  # keep SVGD's repulsive term (False only for ablations)
    # SVGD sub-steps before the regression: n steps of φ/n (the paper's one move, n = 1, integrated more finely)
    svgd_steps: int = 1
    train_critic: bool = True  # False: the critic stays as given (a fixed known Q, launch/diagnose.py)

    def validate(self):
        """Raises ValueError with a one-line message on the first invalid setting."""
        check_settings(
            [
                (self.sigma > 0, f'agent.sigma must be > 0, got {self.sigma}'),
                (self.beta >= 0, f'agent.beta must be >= 0, got {self.beta}'),
                (self.num_samples >= 1, f'agent.num_samples must be >= 1, got {self.num_samples}'),
                (self.num_reference >= 1, f'agent.num_reference must be >= 1, got {self.num_reference}'),
                (self.flow_steps >= 1, f'agent.flow_steps must be >= 1, got {self.flow_steps}'),
                (self.svgd_steps >= 1, f'agent.svgd_steps must be >= 1, got {self.svgd_steps}'),
                (
                    self.prior_score in PRIOR_SCORES,
                    f"agent.prior_score must be 'softmax' or 'clipped', got '{self.prior_score}'",
                ),
                *common_checks(self),
                (
                    self.bandwidth_method in ('fixed', 'scott'),
                    f"agent.bandwidth_method must be 'fixed' or 'scott', got '{self.bandwidth_method}'",
                ),
                (
                    self.reference in ('dataset', 'bc_flow'),
                    f"agent.reference must be 'dataset' or 'bc_flow', got '{self.reference}'",
                ),
            ]
        )
        return self


def get_config(family, overrides=None, mode='offline'):
    """The paper's FAV config for a registry Family, then the user's overrides (a dict of field values).

    FAV uses the same settings offline and O2O (`mode` is 'offline' or 'o2o').

    β defaults to the family's FAV β, or to its FAV-Adaptive β when bandwidth_method='scott'.
    """
    overrides = dict(overrides or {})
    method = overrides.get('bandwidth_method', 'fixed')
    # A setting the run would not use is refused: a sweep over it would give the same numbers under other names.
    without_bc_flow = overrides.get('reference') != 'bc_flow'
    unused = {
        'sigma': (
            method == 'scott',
            "is not used with agent.bandwidth_method=scott (σ comes from Scott's rule on each batch)",
        ),
        'num_reference': (without_bc_flow, 'is used only with agent.reference=bc_flow'),
        'flow_steps': (without_bc_flow, 'is used only with agent.reference=bc_flow'),
    }
    for name, (ignored, why) in unused.items():
        if name in overrides and ignored:
            raise ValueError(f'agent.{name} {why}; leave it out')
    defaults = dict(
        sigma=family.sigma,
        beta=family.adaptive_beta if method == 'scott' else family.beta,
        discount=family.discount,
        q_agg=family.q_agg,
    )
    return FAVConfig(**{**defaults, **overrides}).validate()


def scott_bandwidth(actions):
    """FAV-Adaptive σ from a batch of dataset actions (n, d): h = n^(-1/(d+4))·std, σ = 2h²."""
    n, d = actions.shape
    std = jnp.maximum(jnp.std(actions, axis=0).mean(), 1e-4)
    h = n ** (-1.0 / (d + 4)) * std
    return 2.0 * h**2


def kde_score(samples, reference, bandwidth, form='softmax'):
    """∇_x log Σ_i k(x, y_i) for k(x, y) = exp(-||x-y||²/σ), samples (M, d), reference (K, d).

    'softmax': 2(Σ_i w_i y_i - x)/σ with w = softmax_i(-||x-y_i||²/σ), exact even far from every particle.
    'clipped': the public reference code's 2(Σ_i k_i y_i - S·x)/(σ·S) with S = max(Σ_i k_i, 1e-6); far from
    the data (Σk < 1e-6) it becomes a pull toward the origin, -2x/σ.
    """
    sq_dists = jnp.sum((samples[:, None, :] - reference[None, :, :]) ** 2, -1)  # (M, K)
    if form == 'clipped':
        kernel = jnp.exp(-sq_dists / bandwidth)
        total = jnp.maximum(kernel.sum(1, keepdims=True), CLIPPED_KERNEL_SUM)
        return 2.0 * (kernel @ reference - total * samples) / (bandwidth * total)
    weights = jax.nn.softmax(-sq_dists / bandwidth, axis=1)
    return 2.0 * (weights @ reference - samples) / bandwidth


def svgd_direction(samples, reference, reward_grad, bandwidth, beta, prior_score='softmax', repulsive=True):
    """SVGD direction φ (M, d) for M samples of one state toward p̂_ref·exp(βQ).

    φ(x_j) = 1/M Σ_l k(x_l, x_j)[∇log p̂_ref(x_l) + β∇Q(x_l)] + 1/M Σ_l ∇_{x_l} k(x_l, x_j).
    `prior_score` picks the KDE score's form (see kde_score); `repulsive=False` drops the last term (ablation).
    Returns (φ, diagnostics).
    """
    m = samples.shape[0]
    reference_score = kde_score(samples, reference, bandwidth, prior_score)
    reward_score = beta * reward_grad
    target_score = reference_score + reward_score  # (M, d)

    diffs = samples[:, None, :] - samples[None, :, :]  # diffs[l, j] = x_l - x_j
    kernel = jnp.exp(-jnp.sum(diffs**2, -1) / bandwidth)  # kernel[l, j] = k(x_l, x_j)
    driving = kernel.T @ target_score / m
    # ∇_{x_l} k(x_l, x_j) = -2 (x_l - x_j)/σ · k(x_l, x_j)
    repulsive_term = jnp.sum(-2.0 / bandwidth * diffs * kernel[..., None], axis=0) / m
    phi = driving + repulsive_term if repulsive else driving
    reference_norm = jnp.linalg.norm(reference_score, axis=-1)
    reward_norm = jnp.linalg.norm(reward_score, axis=-1)
    info = dict(
        reference_score_norm=reference_norm.mean(),
        reward_score_norm=reward_norm.mean(),
        # Share of the prior in the driving score: near 1, Q barely moves the samples; near 0, the data is ignored.
        prior_score_share=(reference_norm / (reference_norm + reward_norm + 1e-12)).mean(),
        repulsive_norm=jnp.linalg.norm(repulsive_term, axis=-1).mean(),
        phi_norm=jnp.linalg.norm(phi, axis=-1).mean(),
        # Mean k(x_l, x_j) over l != j: near 0, σ is too small for the M samples to interact (0 when M = 1).
        kernel_offdiag_mean=(kernel.sum() - m) / max(m * (m - 1), 1),
    )
    return phi, info


class FAVAgent(flax.struct.PyTreeNode):
    rng: Any
    actor: TrainState
    critic: TrainState
    target_critic_params: Any
    bc_flow: Any  # TrainState of the BC flow policy, or None with reference='dataset'
    config: FAVConfig = static_field()
    action_dim: int = static_field()

    @classmethod
    def create(cls, seed, example_observations, example_actions, config: FAVConfig):
        """Builds the agent from a seed, example (batch, dim) arrays and a validated config."""
        config.validate()
        rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
        rng, actor_key, critic_key, flow_key = jax.random.split(rng, 4)
        action_dim = example_actions.shape[-1]

        actor_net = OneStepGenerator(config.hidden_dims, action_dim, config.actor_layer_norm)
        actor_params = actor_net.init(actor_key, example_observations, example_actions)
        critic_net = CriticEnsemble(config.hidden_dims, config.num_qs, config.critic_layer_norm)
        critic_params = critic_net.init(critic_key, example_observations, example_actions)
        bc_flow = None
        if config.reference == 'bc_flow':
            flow_net = FlowVelocity(config.hidden_dims, action_dim, config.actor_layer_norm)
            flow_params = flow_net.init(flow_key, example_observations, example_actions, example_actions[..., :1])
            bc_flow = train_state(flow_net, flow_params, config.lr)
        return cls(
            rng=rng,
            actor=train_state(actor_net, actor_params, config.lr),
            critic=train_state(critic_net, critic_params, config.lr),
            target_critic_params=critic_params,
            bc_flow=bc_flow,
            config=config,
            action_dim=action_dim,
        )

    def sample_actions(self, observations, rng):
        """One generator sample per observation (batched or single), in [-1, 1]."""
        noises = jax.random.normal(rng, observations.shape[:-1] + (self.action_dim,))
        return self.actor.apply_fn(self.actor.params, observations, noises)

    def _critic_loss(self, critic_params, batch, rng):
        next_actions = self.sample_actions(batch['next_observations'], rng)
        next_qs = self.critic.apply_fn(self.target_critic_params, batch['next_observations'], next_actions)
        target = td_target(batch, self.config.discount, aggregate_q(next_qs, self.config.q_agg))
        qs = self.critic.apply_fn(critic_params, batch['observations'], batch['actions'])
        loss = jnp.mean((qs - jax.lax.stop_gradient(target)) ** 2)
        return loss, dict(critic_loss=loss, q_mean=qs.mean(), q_max=qs.max(), q_min=qs.min())

    def _bc_flow_samples(self, observations, rng):
        """K reference actions per state from the BC flow policy by Euler integration, (B, K, d)."""
        obs = jnp.repeat(observations[:, None, :], self.config.num_reference, axis=1)
        noises = jax.random.normal(rng, obs.shape[:-1] + (self.action_dim,))
        velocity = functools.partial(self.bc_flow.apply_fn, self.bc_flow.params)
        return jax.lax.stop_gradient(flow_actions(velocity, obs, noises, self.config.flow_steps))

    def _bc_flow_loss(self, flow_params, batch, rng):
        velocity = functools.partial(self.bc_flow.apply_fn, flow_params)
        loss = flow_matching_loss(velocity, batch['observations'], batch['actions'], rng)
        return loss, dict(bc_flow_loss=loss)

    def _svgd_direction(self, obs, samples, reference, bandwidth):
        """φ for samples (B, M, d) of the states `obs` (B, M, obs_dim), with ∇Q from the current critic."""

        def mean_q(actions):
            return self.critic.apply_fn(self.critic.params, obs, actions).mean(0).sum()

        config = self.config
        direction = functools.partial(svgd_direction, prior_score=config.prior_score, repulsive=config.repulsive)
        return jax.vmap(direction, in_axes=(0, 0, 0, None, None))(
            samples, reference, jax.grad(mean_q)(samples), bandwidth, config.beta
        )

    def _actor_loss(self, actor_params, batch, rng):
        config = self.config
        noise_key, reference_key = jax.random.split(rng)
        batch_size = batch['observations'].shape[0]
        obs = jnp.repeat(batch['observations'][:, None, :], config.num_samples, axis=1)  # (B, M, obs)
        noises = jax.random.normal(noise_key, (batch_size, config.num_samples, self.action_dim))
        samples = self.actor.apply_fn(actor_params, obs, noises)  # (B, M, d), clipped to [-1, 1]
        if config.reference == 'bc_flow':
            reference = self._bc_flow_samples(batch['observations'], reference_key)
        else:
            reference = batch['actions'][:, None, :]
        if config.bandwidth_method == 'scott':
            bandwidth = scott_bandwidth(batch['actions'])
        else:
            bandwidth = jnp.asarray(config.sigma, jnp.float32)

        moved = jax.lax.stop_gradient(samples)
        for step in range(config.svgd_steps):
            phi, step_info = self._svgd_direction(obs, moved, reference, bandwidth)
            if step == 0:
                phi_norms, svgd_info = jnp.linalg.norm(phi, axis=-1), step_info
            moved = moved + phi / config.svgd_steps
        loss = jnp.mean(jnp.sum((jax.lax.stop_gradient(moved) - samples) ** 2, -1))
        info = {k: v.mean() for k, v in svgd_info.items()}
        info.update(actor_loss=loss, bandwidth=bandwidth, sample_std=samples.std(1).mean())
        n = min(batch_size, RESIDUAL_STATES)
        info['residual_before'] = phi_norms[:n].mean()
        return loss, (info, (obs[:n], noises[:n], reference[:n], bandwidth))

    def _residual_after(self, actor_params, obs, noises, reference, bandwidth):
        """Mean ||φ|| at the updated actor's samples for the same states, noises and reference particles."""
        samples = self.actor.apply_fn(actor_params, obs, noises)
        phi, _ = self._svgd_direction(obs, samples, reference, bandwidth)
        return jnp.linalg.norm(phi, axis=-1).mean()

    @jax.jit
    def update(self, batch):
        """One step on the critic, the actor (and the BC flow): returns (new agent, metrics)."""
        rng, critic_key, actor_key, flow_key = jax.random.split(self.rng, 4)
        actor_grads, (info, residual_inputs) = jax.grad(self._actor_loss, has_aux=True)(
            self.actor.params, batch, actor_key
        )
        actor = self.actor.apply_gradients(grads=actor_grads)
        # Fixed-point residual after the step (old critic, so it measures the actor's move only); on
        # RESIDUAL_STATES states to keep its cost (one actor forward + one ∇Q) a small part of the update.
        info['residual_after'] = self._residual_after(actor.params, *residual_inputs)
        critic, target = self.critic, self.target_critic_params
        if self.config.train_critic:
            critic_grads, critic_info = jax.grad(self._critic_loss, has_aux=True)(critic.params, batch, critic_key)
            critic = critic.apply_gradients(grads=critic_grads)
            target = polyak(self.critic.params, target, self.config.tau)
            info.update(critic_info)
        bc_flow = self.bc_flow
        if bc_flow is not None:
            flow_grads, flow_info = jax.grad(self._bc_flow_loss, has_aux=True)(bc_flow.params, batch, flow_key)
            bc_flow = bc_flow.apply_gradients(grads=flow_grads)
            info.update(flow_info)
        agent = self.replace(rng=rng, actor=actor, critic=critic, target_critic_params=target, bc_flow=bc_flow)
        return agent, info


Agent = FAVAgent
Config = FAVConfig
