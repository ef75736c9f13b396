"""Transitions kept on the accelerator; batches are sampled by a jitted gather, never copied from the host.

One structure serves both phases: offline it holds the dataset (size == capacity); for O2O it is
created from the dataset with room for the online transitions, which are appended behind it.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

TRANSITION_KEYS = ('observations', 'actions', 'next_observations', 'rewards', 'masks', 'terminals')
ACTION_CLIP = 1 - 1e-5


class ReplayBuffer(flax.struct.PyTreeNode):
    data: dict  # key -> array with leading dimension `capacity`
    size: Any  # int32 scalar: rows filled, offline rows first

    @classmethod
    def create(cls, dataset, capacity=None):
        """From a dict of numpy arrays (the keys in TRANSITION_KEYS), with room for `capacity` rows."""
        missing = [k for k in TRANSITION_KEYS if k not in dataset]
        if missing:
            raise ValueError(f'dataset lacks keys {missing}; expected {list(TRANSITION_KEYS)}')
        size = len(dataset['observations'])
        capacity = size if capacity is None else capacity
        if capacity < size:
            raise ValueError(f'buffer capacity {capacity} is smaller than the dataset ({size} rows)')
        data = {}
        for k in TRANSITION_KEYS:
            values = np.asarray(dataset[k], dtype=np.float32)
            if k == 'actions':
                values = np.clip(values, -ACTION_CLIP, ACTION_CLIP)
            padded = np.zeros((capacity,) + values.shape[1:], np.float32)
            padded[:size] = values
            data[k] = jnp.asarray(padded)
        return cls(data=data, size=jnp.asarray(size, jnp.int32))

    @property
    def capacity(self):
        return self.data['observations'].shape[0]

    def sample(self, rng, batch_size):
        """A uniform batch over the filled rows (traceable: use inside jit / scan)."""
        return self._gather(jax.random.randint(rng, (batch_size,), 0, self.size))

    def sample_balanced(self, rng, batch_size, offline_rows):
        """Half the batch (the first ⌈B/2⌉ rows) uniform over the offline rows [0, offline_rows), half uniform
        over the online rows [offline_rows, size): RLPD's 50/50 sampling. While no online row exists (the
        offline phase) it is `sample`. Traceable."""
        offline_key, online_key, uniform_key = jax.random.split(rng, 3)
        num_online = batch_size // 2
        offline_idx = jax.random.randint(offline_key, (batch_size - num_online,), 0, offline_rows)
        online_idx = jax.random.randint(
            online_key, (num_online,), offline_rows, jnp.maximum(self.size, offline_rows + 1)
        )
        balanced = jnp.concatenate([offline_idx, online_idx])
        uniform = jax.random.randint(uniform_key, (batch_size,), 0, self.size)
        return self._gather(jnp.where(self.size > offline_rows, balanced, uniform))

    def _gather(self, idx):
        """The rows `idx`, plus `next_actions`: the action of the row after each (the last filled row
        repeats its own), ReBRAC's next dataset action a'. As in FQL's code, at an episode's last row
        this is the next episode's first action (the critic's BC term there is off by one transition)."""
        batch = jax.tree_util.tree_map(lambda x: x[idx], self.data)
        batch['next_actions'] = self.data['actions'][jnp.minimum(idx + 1, self.size - 1)]
        return batch

    def append(self, transitions):
        """Appends a batch of transitions (dict of arrays with a leading row axis) at row `size`,
        actions clipped as in `create` (traceable; in place when the buffer is donated to the
        enclosing jit).

        The caller keeps the total number of appends within capacity (the loops size the buffer
        as dataset + online steps), so nothing is overwritten.
        """
        rows = {k: jnp.asarray(v, jnp.float32) for k, v in transitions.items()}
        rows['actions'] = jnp.clip(rows['actions'], -ACTION_CLIP, ACTION_CLIP)
        data = {k: jax.lax.dynamic_update_slice_in_dim(v, rows[k], self.size, 0) for k, v in self.data.items()}
        return self.replace(data=data, size=self.size + len(transitions['observations']))

    def rows(self, start, stop):
        """Host copy of rows [start, stop) — used to checkpoint the online part."""
        return {k: np.asarray(v[start:stop]) for k, v in self.data.items()}

    def write_rows(self, start, rows):
        """Restores rows written by `rows` (host-side, at resume)."""
        count = len(rows['observations'])
        data = {k: v.at[start : start + count].set(jnp.asarray(rows[k])) for k, v in self.data.items()}
        return self.replace(data=data, size=jnp.asarray(start + count, jnp.int32))
