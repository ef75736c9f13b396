"""ReplayBuffer: device sampling, O2O appends into a FIFO ring, action clipping, checkpointed ring state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import datasets.buffer as buffer_module
from datasets.buffer import ACTION_CLIP, TRANSITION_KEYS, GroupBuffer, ReplayBuffer


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


def test_appended_actions_are_clipped_into_the_open_box_on_both_sides():
    """As the dataset's: an env action at a bound (-1 or 1) or beyond it is stored at ±ACTION_CLIP."""
    data = _dataset(n=4)
    new = {k: np.zeros((2, *v.shape[1:]), np.float32) for k, v in data.items()}
    new['actions'] = np.array([[-1.0, 1.0], [-2.0, 0.5]], np.float32)
    buffer = ReplayBuffer.create(data, capacity=6).append(new)
    clip = np.float32(ACTION_CLIP)
    np.testing.assert_array_equal(np.asarray(buffer.data['actions'][4:]), [[-clip, clip], [-clip, 0.5]])


def _rows(values, like):
    """One transition per value, every field filled with that value."""
    return {k: np.stack([np.full(v.shape[1:], x, np.float32) for x in values]) for k, v in like.items()}


def _appended(buffer, data, values, chunk):
    for lo in range(0, len(values), chunk):
        buffer = buffer.append(_rows(values[lo : lo + chunk], data))
    return buffer


def test_full_ring_overwrites_the_oldest_rows_and_samples_every_row():
    data = _dataset(n=4)  # rewards 0..3
    buffer = _appended(ReplayBuffer.create(data, capacity=6), data, [10, 11, 12, 13, 14], chunk=2)
    # 10, 11 fill rows 4, 5; then 12, 13, 14 overwrite the oldest rows 0, 1, 2; row 3 is the last dataset row.
    np.testing.assert_array_equal(np.asarray(buffer.data['rewards']), [12, 13, 14, 3, 10, 11])
    assert (int(buffer.size), int(buffer.pointer), int(buffer.online_count)) == (6, 3, 5)
    assert int(buffer.offline_size) == 4
    rewards = np.asarray(buffer.sample(jax.random.PRNGKey(0), 3000)['rewards'])
    assert set(np.unique(rewards)) == {3, 10, 11, 12, 13, 14}  # all filled rows, none of the overwritten ones
    counts = np.unique(rewards, return_counts=True)[1]
    assert counts.min() > 400  # uniform: 500 each expected


def _marked(values, like):
    """Rows like `_rows`, but with the action value / 100 (inside the action box, so not clipped)."""
    rows = _rows(values, like)
    rows['actions'] = rows['actions'] / 100
    return rows


def _next_action_of_each_row(buffer, batch=None):
    """{row's reward: the next_actions value sampled with it} over every filled row (of `batch` if given)."""
    batch = buffer.sample(jax.random.PRNGKey(0), 2000) if batch is None else batch
    rewards, next_actions = np.asarray(batch['rewards']), np.asarray(batch['next_actions'])[:, 0]
    pairs = {(float(r), float(a)) for r, a in zip(rewards, next_actions, strict=True)}
    assert len({r for r, _ in pairs}) == len(pairs), pairs  # one next action per row
    return {r: round(100 * a) for r, a in pairs}


def test_next_actions_are_the_following_rows_and_the_newest_row_repeats_its_own():
    data = _marked(range(4), _dataset(n=4))  # row i: reward i, action i / 100
    # Offline (the ring is the dataset, full): the last row is the newest, with no following row either.
    assert _next_action_of_each_row(ReplayBuffer.create(data)) == {0: 1, 1: 2, 2: 3, 3: 3}
    # Partly filled (4 dataset rows, 1 appended, room for 6): the newest row has no following row.
    buffer = ReplayBuffer.create(data, capacity=6).append(_marked([4], data))
    assert _next_action_of_each_row(buffer) == {0: 1, 1: 2, 2: 3, 3: 4, 4: 4}
    # A full ring that wrapped (capacity 4; 10, 11, 12 overwrote rows 0, 1, 2): the row after the oldest
    # (dataset row 3) is the first appended one, and the newest (12) must not read the oldest (3).
    buffer = ReplayBuffer.create(data, capacity=4).append(_marked([10, 11, 12], data))
    assert _next_action_of_each_row(buffer) == {3: 10, 10: 11, 11: 12, 12: 12}


def test_the_view_partway_through_an_append_that_wraps_ends_at_its_newest_row():
    data = _marked(range(4), _dataset(n=4))
    buffer = ReplayBuffer.create(data, capacity=5)
    before = buffer.before_append(3)
    buffer = buffer.append(_marked([20, 21, 22], data))  # rows 4, 0, 1: the append wraps past the end
    # As of two visible rows, 20 (row 4) and 21 (row 0, the newest: no following row) over the dataset's 1, 2, 3.
    batch = buffer.sample_during_append(jax.random.PRNGKey(0), 2000, before, 2)
    assert _next_action_of_each_row(buffer, batch) == {1: 2, 2: 3, 3: 20, 20: 21, 21: 21}


def test_append_past_the_end_wraps_and_the_view_partway_through_keeps_old_rows():
    data = _dataset(n=4)
    buffer = _appended(ReplayBuffer.create(data, capacity=5), data, [10], chunk=1)
    before = buffer.before_append(3)
    buffer = buffer.append(_rows([20, 21, 22], data))  # rows 0, 1, 2 (one wrap past the end)
    np.testing.assert_array_equal(np.asarray(buffer.data['rewards']), [20, 21, 22, 3, 10])
    np.testing.assert_array_equal(np.asarray(before['rows']['rewards']), [0, 1, 2])
    assert (int(before['size']), int(before['pointer'])) == (5, 0)
    # As of one visible row of that append, rows 1 and 2 still hold the dataset's 1 and 2.
    seen = np.asarray(buffer.sample_during_append(jax.random.PRNGKey(1), 3000, before, 1)['rewards'])
    assert set(np.unique(seen)) == {20, 1, 2, 3, 10}


@pytest.mark.parametrize('rows_per_read', [2**16, 4])  # one read per checkpoint, or several joined
def test_ring_state_round_trip_after_wrapping(rows_per_read, monkeypatch):
    monkeypatch.setattr(buffer_module, 'ROWS_PER_READ', rows_per_read)
    data = _dataset(n=4)
    rows, count = GroupBuffer.of_one_task(data, capacity=6).online_rows(0)  # no appends yet
    assert count == 0 and {k: v.shape for k, v in rows.items()} == {k: (0, *data[k].shape[1:]) for k in data}
    for appended in ([10, 11], [10, 11, 12, 13, 14], list(range(10, 23))):  # not full, wrapped, wrapped twice
        buffer = _appended(ReplayBuffer.create(data, capacity=6), data, appended, chunk=3)
        # Read from run 1 of a group whose run 0 has other online rows.
        other = _appended(ReplayBuffer.create(data, capacity=6), data, [30, 31, 32], chunk=3)
        rows, count = GroupBuffer(runs=jax.tree_util.tree_map(lambda *x: jnp.stack(x), other, buffer)).online_rows(1)
        assert count == len(appended) and len(rows['rewards']) == min(len(appended), 6)
        # Restored into run 1 of a fresh group; run 0 is left as it was created.
        fresh = GroupBuffer.of_one_task(data, runs=2, capacity=6).restore_online_rows(1, rows, count)
        untouched, fresh = ReplayBuffer.create(data, capacity=6), fresh.run(1)
        for k in TRANSITION_KEYS:
            np.testing.assert_array_equal(np.asarray(fresh.data[k]), np.asarray(buffer.data[k]))
        for field in ('size', 'pointer', 'offline_size', 'online_count'):
            assert int(getattr(fresh, field)) == int(getattr(buffer, field)), field
        # The restored ring goes on as the original: the next append lands on the same row.
        a, b = buffer.append(_rows([99], data)), fresh.append(_rows([99], data))
        np.testing.assert_array_equal(np.asarray(a.data['rewards']), np.asarray(b.data['rewards']))
    group = GroupBuffer.of_one_task(data, runs=2, capacity=6).restore_online_rows(1, rows, count)
    for k in TRANSITION_KEYS:
        np.testing.assert_array_equal(np.asarray(group.run(0).data[k]), np.asarray(untouched.data[k]))
    with pytest.raises(ValueError, match='saved online rows'):
        GroupBuffer.of_one_task(data, capacity=6).restore_online_rows(0, rows, 2)


def test_bad_inputs():
    data = _dataset()  # 10 rows
    with pytest.raises(ValueError, match=r'^buffer capacity 9 is smaller than the dataset \(10 rows\)$'):
        ReplayBuffer.create(data, capacity=9)
    buffer = ReplayBuffer.create(data, capacity=10)  # just the dataset: the offline ring
    with pytest.raises(ValueError, match='^cannot append 11 rows at once to a buffer of 10$'):
        buffer.append(_rows(range(11), data))
    assert int(buffer.append(_rows(range(10), data)).online_count) == 10  # a whole ring's worth at once is fine
    del data['masks']
    with pytest.raises(ValueError, match='masks'):
        ReplayBuffer.create(data)


def test_balanced_default_capacity_keeps_every_dataset_row(monkeypatch):
    """RLPD's reference keeps the dataset whole beside a 2M-row online buffer. With the default capacity
    for balanced sampling, the offline half still spans every dataset row after as many online appends
    as that online buffer holds; the uniform default ring (max(2M, N + 1)) has overwritten most of them."""
    import datasets.buffer as buffer_module

    monkeypatch.setattr(buffer_module, 'REFERENCE_MIN_CAPACITY', 6)  # 2M, scaled down
    data = _dataset(n=8)
    balanced = ReplayBuffer.create(data, capacity=buffer_module.default_capacity(8, balanced=True))
    uniform = ReplayBuffer.create(data, capacity=buffer_module.default_capacity(8))
    assert (balanced.capacity, uniform.capacity) == (14, 9)
    online = [100.0 + i for i in range(6)]
    for buffer, kept in ((balanced, set(range(8))), (uniform, {5, 6, 7})):
        buffer = _appended(buffer, data, online, chunk=2)
        rewards = np.asarray(buffer.sample(jax.random.PRNGKey(1), 4000, balanced=True)['rewards'])
        offline_half, online_half = rewards[:2000], rewards[2000:]
        assert set(np.unique(offline_half)) == kept
        assert set(np.unique(online_half)) == set(online)


def test_each_run_of_a_group_reads_its_own_tasks_rewards_and_masks():
    data = _dataset(n=5)
    shared = {k: v for k, v in data.items() if k not in ('rewards', 'masks')}
    labels = dict(rewards=np.arange(15, dtype=np.float32).reshape(3, 5), masks=np.eye(3, 5, dtype=np.float32))
    buffer = GroupBuffer.create(shared, labels, [2, 0, 1, 2])  # four runs over three tasks' labels
    for run, task in enumerate([2, 0, 1, 2]):
        ring = buffer.run(run)
        np.testing.assert_array_equal(np.asarray(ring.data['rewards'][:5]), labels['rewards'][task])
        np.testing.assert_array_equal(np.asarray(ring.data['masks'][:5]), labels['masks'][task])
        np.testing.assert_array_equal(np.asarray(ring.data['observations'][:5]), data['observations'])


def test_balanced_batches_put_the_odd_row_offline_and_turn_uniform_once_no_dataset_row_is_left():
    """The first ⌈B/2⌉ rows of a balanced batch are dataset rows, the rest online rows; once online rows
    have overwritten every dataset row, the whole batch is uniform over the ring."""
    data = _dataset(n=4)  # rewards 0..3
    draw = jax.jit(jax.vmap(lambda b, k: b.sample(k, 5, balanced=True)['rewards'], in_axes=(None, 0)))
    keys = jax.random.split(jax.random.PRNGKey(0), 600)
    buffer = _appended(ReplayBuffer.create(data, capacity=6), data, [10, 11], chunk=2)
    rewards = np.asarray(draw(buffer, keys))  # (600 batches, 5)
    assert set(np.unique(rewards[:, :3])) == {0, 1, 2, 3} and set(np.unique(rewards[:, 3:])) == {10, 11}
    buffer = _appended(buffer, data, [12, 13, 14, 15], chunk=2)  # rows 0..3 overwritten
    rewards = np.asarray(draw(buffer, keys))
    for half in (rewards[:, :3], rewards[:, 3:]):
        values, counts = np.unique(half, return_counts=True)
        assert values.tolist() == list(range(10, 16)) and counts.min() > half.size / 6 / 2


def test_a_balanced_batch_before_any_online_row_is_uniform_over_the_dataset():
    """With no online row yet there is no online half: the whole batch is uniform over the dataset rows (never
    the empty row the next append will write)."""
    data = _dataset(n=4)  # rewards 0..3; row 4 (the pointer) is padding, reward 0
    rewards = np.asarray(
        ReplayBuffer.create(data, capacity=6).sample(jax.random.PRNGKey(0), 2000, balanced=True)['rewards']
    )
    values, counts = np.unique(rewards, return_counts=True)
    assert values.tolist() == [0, 1, 2, 3] and counts.max() < 600  # uniform: 500 each expected


def _coded(values, like):
    """One transition per value v, field j of it filled with v * 10 + j (actions / 1000, inside the box): every
    field of a row tells its row and its own name."""
    rows = {}
    for j, (key, column) in enumerate(like.items()):
        codes = (np.asarray(values, np.float32) * 10 + j) / (1000 if key == 'actions' else 1)
        rows[key] = np.broadcast_to(codes.reshape(-1, *[1] * (column.ndim - 1)), (len(values), *column.shape[1:]))
    return {k: np.array(v, np.float32) for k, v in rows.items()}


def _assert_whole_rows(batch, like):
    """Every field of each sampled row comes from the row its reward names, and from its own field."""
    values = np.floor(np.asarray(batch['rewards']) / 10)
    expected = _coded(values, like)
    for key in like:
        np.testing.assert_allclose(np.asarray(batch[key]), expected[key], rtol=1e-6, err_msg=key)


def test_every_field_of_a_sampled_row_is_that_rows_before_and_during_an_append_that_wraps():
    """Rewards were checked against observations only: a field read from another row (next_observations from the
    following row, say) or another field passed every test."""
    data = _coded(range(4), _dataset(n=4))
    buffer = ReplayBuffer.create(data, capacity=6).append(_coded([10, 11], data))
    _assert_whole_rows(buffer.sample(jax.random.PRNGKey(0), 500), data)
    before = buffer.before_append(3)
    buffer = buffer.append(_coded([20, 21, 22], data))  # rows 0, 1, 2: the append wraps
    batch = buffer.sample(jax.random.PRNGKey(1), 500)
    assert set(np.floor(np.asarray(batch['rewards']) / 10).tolist()) == {20, 21, 22, 3, 10, 11}
    _assert_whole_rows(batch, data)
    for visible in (1, 2, 3):  # the rows not yet written are read, whole, from `before`
        _assert_whole_rows(buffer.sample_during_append(jax.random.PRNGKey(visible), 500, before, visible), data)
