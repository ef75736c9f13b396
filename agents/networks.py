"""Networks shared by the agents: MLPs, the critic ensemble, a state value, Gaussian actors, the one-step generator,
a flow velocity field."""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'))(x)
            x = nn.gelu(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
        return nn.Dense(self.output_dim, kernel_init=nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'))(x)


class CriticEnsemble(nn.Module):
    """`num_qs` independent Q(s, a) networks evaluated in one call; output shape (num_qs, ...)."""

    hidden_dims: Sequence[int]
    num_qs: int = 2
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations, actions):
        ensemble = nn.vmap(
            MLP,
            variable_axes={'params': 0},
            split_rngs={'params': True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_qs,
        )
        q = ensemble(self.hidden_dims, 1, self.layer_norm)(jnp.concatenate([observations, actions], -1))
        return q[..., 0]


class ValueNet(nn.Module):
    """V(s): an MLP (optionally with LayerNorm) from observations to one scalar per state."""

    hidden_dims: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, observations):
        return MLP(self.hidden_dims, 1, self.layer_norm)(observations)[..., 0]


class GaussianActor(nn.Module):
    """Mean and log-std of a diagonal Gaussian over actions (before any tanh), as OGBench's actor.

    The log-std is a state-dependent head, or 0 (std 1) when `state_dependent_std` is False. Both heads
    start small (`final_init_scale`) so the initial policy is near the middle of the action box.
    """

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False
    state_dependent_std: bool = False
    final_init_scale: float = 1e-2
    log_std_range: tuple = (-5.0, 2.0)

    @nn.compact
    def __call__(self, observations):
        # The MLP's output layer is the last hidden layer here, activated like the others.
        features = nn.gelu(MLP(self.hidden_dims[:-1], self.hidden_dims[-1], self.layer_norm)(observations))
        if self.layer_norm:
            features = nn.LayerNorm()(features)
        head_init = nn.initializers.variance_scaling(self.final_init_scale, 'fan_avg', 'uniform')
        mean = nn.Dense(self.action_dim, kernel_init=head_init)(features)
        if self.state_dependent_std:
            log_std = nn.Dense(self.action_dim, kernel_init=head_init)(features)
        else:
            log_std = jnp.zeros_like(mean)
        return mean, jnp.clip(log_std, *self.log_std_range)


class OneStepGenerator(nn.Module):
    """a = clip(π(s, z), -1, 1) with z ~ N(0, I) of the action's size: one network call per sample."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations, noises):
        out = MLP(self.hidden_dims, self.action_dim, self.layer_norm)(jnp.concatenate([observations, noises], -1))
        return jnp.clip(out, -1.0, 1.0)


class FlowVelocity(nn.Module):
    """Velocity field v(s, x_t, t) of a flow-matching behavior-cloning policy."""

    hidden_dims: Sequence[int]
    action_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations, noisy_actions, times):
        inputs = jnp.concatenate([observations, noisy_actions, times], -1)
        return MLP(self.hidden_dims, self.action_dim, self.layer_norm)(inputs)
