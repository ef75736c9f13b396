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


SHARED_KEYS = ('observations', 'actions', 'next_observations', 'terminals')
LABEL_KEYS = ('rewards', 'masks')  # relabeled per task of a family


class GroupBuffer(flax.struct.PyTreeNode):
    """The replay data of a group of R runs (seeds × tasks of one family) on the device.

    One copy of the dataset's observations and actions serves every run; rewards and masks are one
    column per task (`labels[k]` is (T, N)), and run r reads column `label_index[r]`. Each run has its
    own online rows, a ReplayBuffer stacked over runs (leading axis R; capacity 0 offline). Run r's
    buffer is the N dataset rows followed by its online rows, sampled uniformly as one ReplayBuffer.
    """

    shared: dict  # SHARED_KEYS -> (N, ...)
    labels: dict  # LABEL_KEYS -> (T, N)
    label_index: Any  # (R,) int32: run -> its task's column
    online: ReplayBuffer  # data (R, C, ...), size (R,)

    @classmethod
    def create(cls, dataset, labels, label_index, online_capacity=0):
        """`dataset`: numpy arrays with SHARED_KEYS; `labels`: LABEL_KEYS -> (T, N) numpy arrays."""
        shared = ReplayBuffer.create({**dataset, 'rewards': labels['rewards'][0], 'masks': labels['masks'][0]})
        empty = {k: v[:0] for k, v in shared.rows(0, 0).items()}
        online = ReplayBuffer.create(empty, capacity=online_capacity)
        runs = len(label_index)
        return cls(
            shared={k: shared.data[k] for k in SHARED_KEYS},
            labels={k: jnp.asarray(np.asarray(labels[k], np.float32)) for k in LABEL_KEYS},
            label_index=jnp.asarray(label_index, jnp.int32),
            online=jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (runs, *x.shape)).copy(), online),
        )

    @classmethod
    def of_one_task(cls, dataset, runs=1, online_capacity=0):
        """A group of `runs` runs on one task's transitions (a dict with TRANSITION_KEYS)."""
        labels = {k: np.asarray(dataset[k])[None] for k in LABEL_KEYS}
        return cls.create(dataset, labels, [0] * runs, online_capacity)

    def select_runs(self, indices):
        """The group of runs `indices` (a list), sharing this group's dataset arrays."""
        indices = np.asarray(indices)
        online = jax.tree_util.tree_map(lambda x: x[indices], self.online)
        return self.replace(label_index=self.label_index[indices], online=online)

    @property
    def dataset_rows(self):
        return self.shared['observations'].shape[0]

    def sample_run(self, online, label, rng, batch_size, online_rows, balanced=False):
        """A batch over one run's dataset rows and first `online_rows` online rows (traceable; inside a
        vmap over runs, `online` and `label` are the run's): uniform, or with `balanced` half from the
        dataset and half from the online rows once there are any (`ReplayBuffer.sample_balanced`).
        Adds `next_actions`, the action of the row after each (`ReplayBuffer._gather`)."""
        n = self.dataset_rows
        size = n + online_rows
        if balanced:
            offline_key, online_key, uniform_key = jax.random.split(rng, 3)
            num_online = batch_size // 2
            offline_idx = jax.random.randint(offline_key, (batch_size - num_online,), 0, n)
            online_idx = jax.random.randint(online_key, (num_online,), n, jnp.maximum(size, n + 1))
            uniform = jax.random.randint(uniform_key, (batch_size,), 0, size)
            idx = jnp.where(size > n, jnp.concatenate([offline_idx, online_idx]), uniform)
        else:
            idx = jax.random.randint(rng, (batch_size,), 0, size)
        batch = self._gather_run(online, label, idx)
        batch['next_actions'] = self._gather_run(online, label, jnp.minimum(idx + 1, size - 1))['actions']
        return batch

    def _gather_run(self, online, label, idx):
        """Rows `idx` of one run's buffer: dataset rows [0, N), then its online rows."""
        n = self.dataset_rows
        rows = jnp.minimum(idx, n - 1)
        batch = {k: v[rows] for k, v in self.shared.items()}
        batch.update({k: v[label, rows] for k, v in self.labels.items()})
        if online.capacity == 0:
            return batch
        from_online = idx >= n
        online_batch = jax.tree_util.tree_map(lambda x: x[jnp.clip(idx - n, 0, online.capacity - 1)], online.data)
        return {
            k: jnp.where(from_online.reshape(-1, *[1] * (v.ndim - 1)), online_batch[k], v) for k, v in batch.items()
        }
