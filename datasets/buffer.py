"""Transitions kept on the accelerator; batches are sampled by a jitted gather, never copied from the host.

One structure serves both phases: offline it holds the dataset (size == capacity); for O2O it is a
ring created from the dataset, as in the reference code: online transitions are written behind the
dataset rows and, once the ring is full, over the oldest rows (FIFO), and batches are drawn
uniformly over the filled rows.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

TRANSITION_KEYS = ('observations', 'actions', 'next_observations', 'rewards', 'masks', 'terminals')
ACTION_CLIP = 1 - 1e-5
REFERENCE_MIN_CAPACITY = 2_000_000  # the reference's ring holds max(2M, N + 1) rows
RING_ROW_LIMIT = 2**31  # a ring holds fewer rows than this: its size and pointer are int32
ROWS_PER_READ = 2**16  # a checkpoint copies a run's online rows to the host in blocks of this many


def default_capacity(dataset_rows, balanced=False):
    """The reference's ring: max(2M, N + 1) rows. With balanced sampling (RLPD) the reference keeps the
    dataset whole and gives online transitions a 2M-row buffer of their own, so here the ring holds
    the dataset plus 2M rows: no online row overwrites a dataset row before 2M online steps."""
    if balanced:
        return dataset_rows + REFERENCE_MIN_CAPACITY
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
        return GroupBuffer.of_one_task(dataset, capacity=capacity).run(0)

    @property
    def capacity(self):
        return self.data['observations'].shape[0]

    def sample(self, rng, batch_size, balanced=False):
        """A batch over the filled rows: uniform, or `balanced` (see `_draw`). Traceable."""
        idx = self._draw(rng, batch_size, self.size, self.pointer, self.online_count, balanced)
        return self._gather(idx, self.size, self.pointer)

    def _draw(self, rng, batch_size, size, pointer, online_count, balanced):
        """Row indices of a batch from the ring in the state (size, pointer, online_count). Uniform over
        the filled rows; or, `balanced` (RLPD's 50/50), the first ⌈B/2⌉ uniform over the dataset rows no
        online row has overwritten and the rest uniform over the online rows, once there are any (before
        that, and if every dataset row was overwritten, uniform)."""
        uniform = jax.random.randint(rng, (batch_size,), 0, size)
        if not balanced:
            return uniform
        offline_key, online_key = jax.random.split(jax.random.fold_in(rng, 1))
        overwritten = jnp.clip(self.offline_size + online_count - self.capacity, 0, self.offline_size)
        online = jnp.minimum(online_count, self.capacity)
        num_online = batch_size // 2
        offline_idx = jax.random.randint(
            offline_key, (batch_size - num_online,), overwritten, jnp.maximum(self.offline_size, overwritten + 1)
        )
        online_idx = (pointer - online + jax.random.randint(online_key, (num_online,), 0, online)) % self.capacity
        split = (online_count > 0) & (overwritten < self.offline_size)
        return jnp.where(split, jnp.concatenate([offline_idx, online_idx]), uniform)

    def _gather(self, idx, size, pointer, before=None, visible=None):
        """The rows `idx`, plus `next_actions`: the action of the row written after each (the newest row
        repeats its own), ReBRAC's next dataset action a'. As in FQL's code, at an episode's last row
        this is the next episode's first action (the critic's BC term there is off by one transition).
        With `before` (see `before_append`), rows read as they were when only `visible` rows of the
        last append had been written."""

        def rows_at(i, keys):
            rows = {k: self.data[k][i] for k in keys}
            if before is None:
                return rows
            count = len(before['rows']['observations'])
            writer = (i - before['pointer']) % self.capacity  # which row of the append wrote i, if < count
            not_yet = (writer >= visible) & (writer < count)
            old = jnp.minimum(writer, count - 1)
            return {
                k: jnp.where(not_yet.reshape((-1,) + (1,) * (v.ndim - 1)), before['rows'][k][old], v)
                for k, v in rows.items()
            }

        following = (idx + 1) % self.capacity
        following = jnp.where((following == pointer) | (following >= size), idx, following)
        batch = rows_at(idx, self.data.keys())
        batch['next_actions'] = rows_at(following, ['actions'])['actions']
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
        rows: its state, and the rows that append will overwrite (read-only; call it before)."""
        rows = {k: v[self._write_rows(count)] for k, v in self.data.items()}
        return dict(size=self.size, pointer=self.pointer, online_count=self.online_count, rows=rows)

    def sample_during_append(self, rng, batch_size, before, visible, balanced=False):
        """A batch (as `sample`) from the buffer as it was when only the first `visible` rows of its last
        append (whose `before` is given) had been written: a row that a later row of that append
        overwrote is read from `before['rows']`. Draws the same indices as `sample` would then."""
        size = jnp.minimum(before['size'] + visible, self.capacity)
        pointer = (before['pointer'] + visible) % self.capacity
        idx = self._draw(rng, batch_size, size, pointer, before['online_count'] + visible, balanced)
        return self._gather(idx, size, pointer, before, visible)


LABEL_KEYS = ('rewards', 'masks')  # relabeled per task of a family


@functools.partial(jax.jit, static_argnames=('capacity',))
def _stacked_rings(shared, labels, label_index, capacity):
    """The rings of `GroupBuffer.create`, built on the device in one call: the dataset is sent once,
    and the empty part of each ring (possibly 2M rows) never exists on the host."""
    runs, size = len(label_index), len(shared['observations'])

    def ring(rows):  # (R, N, ...) -> (R, capacity, ...), zero rows after the dataset's
        return jnp.pad(rows, [(0, 0), (0, capacity - size)] + [(0, 0)] * (rows.ndim - 2))

    data = {k: ring(jnp.broadcast_to(v, (runs, *v.shape))) for k, v in shared.items()}
    data.update({k: ring(v[label_index]) for k, v in labels.items()})

    def counter(value):
        return jnp.full((runs,), value, jnp.int32)

    filled = counter(size)
    return ReplayBuffer(
        data=data, size=filled, pointer=counter(size % capacity), offline_size=filled, online_count=counter(0)
    )


class GroupBuffer(flax.struct.PyTreeNode):
    """The replay data of a group of R runs (seeds × tasks of one family) on the device: one
    ReplayBuffer per run, stacked along a leading run axis (every field is (R, ...)) and used under
    `vmap`, so each run's buffer is exactly the ring a run alone would have. Each run holds its own
    copy of the dataset: its ring overwrites the oldest (dataset) rows once full, differently per run.
    """

    runs: ReplayBuffer

    @classmethod
    def create(cls, dataset, labels, label_index, capacity=None):
        """`dataset`: numpy arrays with TRANSITION_KEYS but LABEL_KEYS; `labels`: LABEL_KEYS -> (T, N)
        numpy arrays, one row per task; run r reads task `label_index[r]`'s rewards and masks. Room for
        `capacity` rows per run (default: the dataset's)."""
        missing = [k for k in TRANSITION_KEYS if k not in {**dataset, **labels}]
        if missing:
            raise ValueError(f'dataset lacks keys {missing}; expected {list(TRANSITION_KEYS)}')
        size = len(dataset['observations'])
        capacity = size if capacity is None else capacity
        if capacity < size:
            raise ValueError(f'buffer capacity {capacity} is smaller than the dataset ({size} rows)')
        shared = {k: np.asarray(dataset[k], np.float32) for k in TRANSITION_KEYS if k not in LABEL_KEYS}
        shared['actions'] = np.clip(shared['actions'], -ACTION_CLIP, ACTION_CLIP)
        labels = {k: np.asarray(labels[k], np.float32) for k in LABEL_KEYS}  # (T, N)
        return cls(runs=_stacked_rings(shared, labels, np.asarray(label_index, np.int32), capacity))

    @classmethod
    def of_one_task(cls, dataset, runs=1, capacity=None):
        """A group of `runs` runs on one task's transitions (a dict with TRANSITION_KEYS)."""
        labels = {k: np.asarray(dataset[k])[None] for k in LABEL_KEYS if k in dataset}
        return cls.create(dataset, labels, [0] * runs, capacity)

    def run(self, r):
        """Run r's ReplayBuffer."""
        return jax.tree_util.tree_map(lambda x: x[r], self.runs)

    def online_rows(self, r):
        """Host copy of the rows run r's online appends have written, from row `offline_size` on
        (wrapping; at most `capacity` rows), and their count: all a checkpoint needs to rebuild its
        ring. Read in blocks of one size, so that every checkpoint of a run reuses one compiled read
        (a read of exactly the rows written so far would compile anew at each checkpoint)."""
        data = self.runs.data
        capacity = data['observations'].shape[1]
        online_count = int(self.runs.online_count[r])
        count = min(online_count, capacity)
        block = min(capacity, ROWS_PER_READ)
        first = int(self.runs.offline_size[r])
        reads = [_read_ring_rows(data, r, (first + i) % capacity, block) for i in range(0, count, block)]
        rows = {
            k: np.concatenate([np.asarray(read[k]) for read in reads])[:count]
            if reads
            else np.zeros((0, *v.shape[2:]), v.dtype)
            for k, v in data.items()
        }
        return rows, online_count

    def select_runs(self, indices):
        """The group of runs `indices` (a list)."""
        return self.replace(runs=jax.tree_util.tree_map(lambda x: x[np.asarray(indices)], self.runs))

    def restore_online_rows(self, r, rows, online_count):
        """The group after run r's ring, freshly created from its dataset, gets back the state of
        `online_count` appends whose surviving rows are `rows` (from `online_rows`), at resume. Written in
        place: this group's arrays are donated (a resume needs no second copy of the rings)."""
        capacity = self.runs.data['observations'].shape[1]
        count = len(rows['observations'])
        if count != min(online_count, capacity):
            raise ValueError(f'{count} saved online rows do not fit {online_count} appends to {capacity} rows')
        offline = int(self.runs.offline_size[r])
        first = min(count, capacity - offline)  # rows [offline, capacity), then the wrapped ones from row 0
        blocks = [(offline, {k: v[:first] for k, v in rows.items()})]
        if count > first:
            blocks.append((0, {k: v[first:] for k, v in rows.items()}))
        counters = (min(offline + online_count, capacity), (offline + online_count) % capacity, online_count)
        return self.replace(runs=_write_run_rows(self.runs, r, blocks, counters))


@functools.partial(jax.jit, static_argnames=('rows',))
def _read_ring_rows(data, r, first, rows):
    """`rows` rows of run r's ring from row `first` on, wrapping past its last row; r and first are traced."""
    capacity = data['observations'].shape[1]
    idx = (first + jnp.arange(rows)) % capacity
    return {k: v[r, idx] for k, v in data.items()}


@functools.partial(jax.jit, donate_argnums=0)
def _write_run_rows(runs, r, blocks, counters):
    """`runs` (stacked rings) with run r's contiguous `blocks` [(first row, rows)] written and its
    (size, pointer, online_count) set; dynamic_update_slice on a donated buffer updates it in place."""
    data = dict(runs.data)
    for first, rows in blocks:
        for k, v in data.items():
            block = jnp.asarray(rows[k], v.dtype)[None]
            data[k] = jax.lax.dynamic_update_slice(v, block, (_int32(r), _int32(first)) + (_int32(0),) * (v.ndim - 2))
    size, pointer, online_count = (_int32(c) for c in counters)
    return runs.replace(
        data=data,
        size=runs.size.at[r].set(size),
        pointer=runs.pointer.at[r].set(pointer),
        online_count=runs.online_count.at[r].set(online_count),
    )
