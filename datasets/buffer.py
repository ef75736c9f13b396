"""Transitions kept on the accelerator; batches are sampled by a jitted gather, never copied from the host.

One structure serves both phases: offline it holds the dataset (size == capacity); for O2O it is a
ring created from the dataset, as in the reference code: online transitions are written behind the
dataset rows and, once the ring is full, over the oldest rows (FIFO), and batches are drawn
uniformly over the filled rows.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

TRANSITION_KEYS = ('observations', 'actions', 'next_observations', 'rewards', 'masks', 'terminals')
ACTION_CLIP = 1 - 1e-5
REFERENCE_MIN_CAPACITY = 2_000_000  # the reference's ring holds max(2M, N + 1) rows


def default_capacity(dataset_rows):
    return max(REFERENCE_MIN_CAPACITY, dataset_rows + 1)


def _int32(x):
    return jnp.asarray(x, jnp.int32)


class ReplayBuffer(flax.struct.PyTreeNode):
    data: dict  # key -> array with leading dimension `capacity`
    size: Any  # int32 scalar: rows filled (at most capacity)
    pointer: Any  # int32 scalar: the row the next transition is written to
    offline_size: Any  # int32 scalar: dataset rows, written first at rows [0, offline_size)
    online_count: Any  # int32 scalar: online transitions appended so far (some may be overwritten)

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
            # Padded on the device: no host copy of the (possibly 2M-row) empty part.
            padding = jnp.zeros((capacity - size,) + values.shape[1:], jnp.float32)
            data[k] = jnp.concatenate([jnp.asarray(values), padding])
        return cls(
            data=data,
            size=_int32(size),
            pointer=_int32(size % capacity),
            offline_size=_int32(size),
            online_count=_int32(0),
        )

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

    def _write_rows(self, count):
        return (self.pointer + jnp.arange(count)) % self.capacity

    def append(self, transitions):
        """Writes a batch of transitions (dict of arrays with a leading row axis) at `pointer`, wrapping
        over the oldest rows once full, actions clipped as in `create` (traceable; in place when the
        buffer is donated to the enclosing jit: one row at a time, as a scatter made XLA copy the buffer).
        """
        count = len(transitions['observations'])
        if count > self.capacity:
            raise ValueError(f'cannot append {count} rows at once to a buffer of {self.capacity}')
        rows = {k: jnp.asarray(v, jnp.float32) for k, v in transitions.items()}
        rows['actions'] = jnp.clip(rows['actions'], -ACTION_CLIP, ACTION_CLIP)

        def write(j, data):
            at = (self.pointer + j) % self.capacity
            return {k: jax.lax.dynamic_update_slice_in_dim(v, rows[k][j][None], at, 0) for k, v in data.items()}

        return self.replace(
            data=jax.lax.fori_loop(0, count, write, self.data),
            size=jnp.minimum(self.size + count, self.capacity),
            pointer=(self.pointer + count) % self.capacity,
            online_count=self.online_count + count,
        )

    def before_append(self, count):
        """What `sample_during_append` needs to see the buffer partway through an append of `count`
        rows: its size and pointer, and the rows that append will overwrite (read-only; call it before)."""
        rows = {k: v[self._write_rows(count)] for k, v in self.data.items()}
        return dict(size=self.size, pointer=self.pointer, rows=rows)

    def sample_during_append(self, rng, batch_size, before, visible):
        """A uniform batch from the buffer as it was when only the first `visible` rows of its last
        append (`before` = `before_append` of it) had been written: a row that a later row of that
        append overwrote is read from `before['rows']`. Draws the same indices as `sample` would then."""
        count = len(before['rows']['observations'])
        size = jnp.minimum(before['size'] + visible, self.capacity)

        def rows_then(idx):
            writer = (idx - before['pointer']) % self.capacity  # which row of the append wrote idx, if < count
            not_yet = (writer >= visible) & (writer < count)
            old = jnp.minimum(writer, count - 1)
            return {
                k: jnp.where(not_yet.reshape((-1,) + (1,) * (v.ndim - 1)), before['rows'][k][old], v[idx])
                for k, v in self.data.items()
            }

        idx = jax.random.randint(rng, (batch_size,), 0, size)
        batch = rows_then(idx)
        batch['next_actions'] = rows_then(jnp.minimum(idx + 1, size - 1))['actions']  # as `_gather` does
        return batch

    def online_rows(self):
        """Host copy of the rows online appends have written, from row `offline_size` on (wrapping; at
        most `capacity` rows): with `online_count`, all a checkpoint needs to rebuild the ring."""
        count = min(int(self.online_count), self.capacity)
        idx = (int(self.offline_size) + np.arange(count)) % self.capacity
        return {k: np.asarray(v[idx]) for k, v in self.data.items()}

    def restore_online_rows(self, rows, online_count):
        """The ring after `online_count` appends whose surviving rows are `rows` (from `online_rows`),
        on a buffer freshly created from the same dataset (host-side, at resume)."""
        count = len(rows['observations'])
        if count != min(online_count, self.capacity):
            raise ValueError(f'{count} saved online rows do not fit {online_count} appends to {self.capacity} rows')
        offline = int(self.offline_size)
        idx = (offline + np.arange(count)) % self.capacity
        data = {k: v.at[idx].set(jnp.asarray(rows[k])) for k, v in self.data.items()}
        return self.replace(
            data=data,
            size=_int32(min(offline + online_count, self.capacity)),
            pointer=_int32((offline + online_count) % self.capacity),
            online_count=_int32(online_count),
        )
