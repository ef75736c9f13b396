"""Measures FAV update throughput (updates/s) on this machine's default JAX device.

    python launch/throughput.py --env cube-double --updates-per-call 1 100 1000

Uses random data of the task's sizes, so it needs no dataset; the paper-sized networks by default.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from agents import AGENTS  # noqa: E402
from datasets.buffer import ReplayBuffer  # noqa: E402
from envs.registry import resolve_task  # noqa: E402
from launch.compiled import offline_chunk, online_chunk, policy_action  # noqa: E402

# (observation size, action size) of each OGBench family's singletask envs.
SPACE_SIZES = {
    'cube-single-play': (28, 5),
    'cube-double-play': (37, 5),
    'scene-play': (40, 5),
    'puzzle-3x3-play': (55, 5),
    'puzzle-4x4-play': (83, 5),
    'antmaze-large-navigate': (29, 8),
    'antmaze-giant-navigate': (29, 8),
    'humanoidmaze-medium-navigate': (69, 21),
    'humanoidmaze-large-navigate': (69, 21),
    'antsoccer-arena-navigate': (42, 8),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--env', default='cube-double')
    p.add_argument('--updates-per-call', type=int, nargs='+', default=[1, 100, 1000])
    p.add_argument('--calls', type=int, default=5, help='timed calls per K (after one compile call), at least')
    p.add_argument('--min-updates', type=int, default=2000, help='timed updates per K, at least')
    p.add_argument('--online-steps', type=int, default=500, help='timed O2O steps (0: skip)')
    p.add_argument('--rows', type=int, default=1_000_000, help='buffer rows on the device')
    p.add_argument('--hidden-dims', default='512,512,512,512')
    p.add_argument('--reference', default='dataset', choices=['dataset', 'bc_flow'])
    args = p.parse_args()

    task = resolve_task(args.env)
    obs_dim, act_dim = SPACE_SIZES[task.family.name]
    module = AGENTS['fav']
    config = module.get_config(
        task.family, dict(hidden_dims=tuple(int(w) for w in args.hidden_dims.split(',')), reference=args.reference)
    )
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.create(
        dict(
            observations=rng.normal(size=(args.rows, obs_dim)).astype(np.float32),
            actions=rng.uniform(-1, 1, (args.rows, act_dim)).astype(np.float32),
            next_observations=rng.normal(size=(args.rows, obs_dim)).astype(np.float32),
            rewards=-rng.integers(0, 2, args.rows).astype(np.float32),
            masks=np.ones(args.rows, np.float32),
            terminals=np.zeros(args.rows, np.float32),
        )
    )
    agent = module.Agent.create(
        jax.random.PRNGKey(0), buffer.data['observations'][:1], buffer.data['actions'][:1], config
    )
    key = jax.random.PRNGKey(1)
    print(
        f'device: {jax.devices()[0].device_kind} ({jax.default_backend()}); task family {task.family.name} '
        f'obs {obs_dim} act {act_dim}; hidden {config.hidden_dims}; batch {config.batch_size}; '
        f'M {config.num_samples}; reference {config.reference}'
    )
    step = 0
    for k in args.updates_per_call:
        started = time.perf_counter()
        agent, info, _ = offline_chunk(agent, buffer, key, step, k, config.batch_size)
        jax.block_until_ready(info)
        compile_s = time.perf_counter() - started
        step += k
        calls = max(args.calls, -(-args.min_updates // k))
        started = time.perf_counter()
        for _ in range(calls):
            agent, info, _ = offline_chunk(agent, buffer, key, step, k, config.batch_size)
            step += k
        jax.block_until_ready(info)
        elapsed = time.perf_counter() - started
        rate = k * calls / elapsed
        print(
            f'K={k:>5}: {rate:10.1f} updates/s  ({1e3 / rate:.3f} ms/update; '
            f'first call incl. compile {compile_s:.1f} s)'
            f'  → 1M updates ≈ {1e6 / rate / 60:.1f} min'
        )
    if args.online_steps:
        _online_rate(agent, buffer, key, step, config.batch_size, args.online_steps)


def _online_rate(agent, buffer, key, step, batch_size, steps):
    """The O2O loop's device side per env step: the next action (synced to the host), then the
    transition's append and one update, as `launch/loop.py` runs them; the env step itself excluded."""
    buffer = ReplayBuffer.create(
        {k: v[: -steps - 1] for k, v in buffer.data.items()}, capacity=len(buffer.data['masks'])
    )
    transition = {k: v[:1] for k, v in buffer.data.items()}
    observation = np.asarray(buffer.data['observations'][0])
    for i in range(steps + 1):
        if i == 1:  # the first step compiles
            started = time.perf_counter()
        action = np.asarray(policy_action(agent, observation, key, step + i))
        transition['actions'] = jax.numpy.asarray(action[None])
        agent, buffer, _, finite = online_chunk(agent, buffer, transition, key, step + i, batch_size)
        bool(finite)
    rate = steps / (time.perf_counter() - started)
    print(
        f'online: {rate:10.1f} steps/s without the env ({1e3 / rate:.3f} ms/step)'
        f'  → 1M steps ≈ {1e6 / rate / 3600:.2f} h'
    )


if __name__ == '__main__':
    main()
