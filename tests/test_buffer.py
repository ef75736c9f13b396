"""ReplayBuffer: device sampling, O2O appends, action clipping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from datasets.buffer import ACTION_CLIP, TRANSITION_KEYS, ReplayBuffer


def _dataset(n=10, obs_dim=3, act_dim=2):
    rng = np.random.default_rng(0)
    return dict(
        observations=np.arange(n * obs_dim, dtype=np.float32).reshape(n, obs_dim),
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32) * 1.5,
        next_observations=np.arange(n * obs_dim, dtype=np.float32).reshape(n, obs_dim) + 1,
        rewards=np.arange(n, dtype=np.float32),
        masks=np.ones(n, np.float32),
        terminals=np.zeros(n, np.float32),
    )


def test_sample_shapes_dtypes_and_rows():
    buffer = ReplayBuffer.create(_dataset())
    batch = jax.jit(lambda b, k: b.sample(k, 7))(buffer, jax.random.PRNGKey(0))
    assert batch['observations'].shape == (7, 3) and batch['actions'].shape == (7, 2) and batch['rewards'].shape == (7,)
    assert all(v.dtype == jnp.float32 for v in batch.values())
    # Each sampled row is one whole transition: reward i goes with observation row i.
    rows = np.asarray(batch['rewards']).astype(int)
    np.testing.assert_array_equal(np.asarray(batch['observations']), _dataset()['observations'][rows])
    assert float(jnp.max(jnp.abs(buffer.data['actions']))) <= ACTION_CLIP


def test_o2o_append_grows_and_is_sampled():
    data = _dataset(n=4)
    buffer = ReplayBuffer.create(data, capacity=6)
    assert int(buffer.size) == 4 and buffer.capacity == 6
    new = {k: np.full((1, *v.shape[1:]), 100.0, np.float32) for k, v in data.items()}
    buffer = jax.jit(ReplayBuffer.append)(buffer, new)
    assert int(buffer.size) == 5
    np.testing.assert_array_equal(np.asarray(buffer.data['observations'][4]), [100.0] * 3)
    np.testing.assert_array_equal(np.asarray(buffer.data['actions'][4]), np.float32(ACTION_CLIP))  # clipped too
    np.testing.assert_array_equal(np.asarray(buffer.data['observations'][:4]), data['observations'])  # kept
    batch = buffer.sample(jax.random.PRNGKey(0), 2000)
    rewards = np.asarray(batch['rewards'])
    assert (rewards == 100.0).any()  # the appended row is drawn
    assert set(np.unique(rewards)) == set(data['rewards']) | {100.0}  # and every dataset row
    # The padding row (index 5, all zeros) is never drawn.
    assert not np.any(np.all(np.asarray(batch['observations']) == 0, axis=1))


def test_online_rows_round_trip():
    data = _dataset(n=4)
    buffer = ReplayBuffer.create(data, capacity=7)
    buffer = buffer.append(
        {k: np.stack([np.full(v.shape[1:], x, np.float32) for x in (7, 8)]) for k, v in data.items()}
    )
    rows = buffer.rows(4, int(buffer.size))
    fresh = ReplayBuffer.create(data, capacity=7).write_rows(4, rows)
    assert int(fresh.size) == 6
    for k in TRANSITION_KEYS:
        np.testing.assert_array_equal(np.asarray(fresh.data[k]), np.asarray(buffer.data[k]))


def test_bad_inputs():
    data = _dataset()
    with pytest.raises(ValueError, match='capacity'):
        ReplayBuffer.create(data, capacity=3)
    del data['masks']
    with pytest.raises(ValueError, match='masks'):
        ReplayBuffer.create(data)
