"""Networks shared by the agents: MLPs, the critic ensemble, a state value, the one-step generator, a flow
velocity field."""

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
