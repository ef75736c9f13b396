"""Training speed on this machine's default JAX device, for every agent: one table, one process.

    python launch/bench.py                          # paper-sized networks (4×512, batch 256)
    python launch/bench.py --hidden-dims 64,64 --stack 1,4,8
    python launch/bench.py --agents fav --stack 1,8 --o2o-runs 1 --profile /tmp/profile   # + where time goes

Per agent: updates/s of the fused path (K updates per compiled call, batches sampled on the device)
against a plain per-step loop (a batch sampled on the host, one jitted update per call: the pattern of
the public reference code); aggregate updates/s of R stacked runs and the ratio to one run; GFLOP per
update (XLA's cost analysis), the FLOP/s achieved and its fraction of a matmul probe, and the bytes an
update reads and writes (XLA's count) with the rate achieved against a copy probe. Then, for FAV,
O2O env steps/s of 1 and 8 runs on cube-double envs (env included) with the share of time in env
steps, the compiled call (append + update + next action) and the rest, the milliseconds of an env step
in that loop and with the envs stepped alone, and the device memory of one
run for cube-double and humanoidmaze-large with the number of stacked runs that fit. Random data of
the task's sizes: no dataset needed. With --profile, one fused chunk per stacked-run count and a
stretch of O2O steps are also traced with JAX's profiler, and the events with the most self time per
update or env step are listed (launch/trace_summary.py).
"""

import math
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from launch.stops import record_stops  # noqa: E402

if __name__ == '__main__':  # not when imported: the importer's own Ctrl-C stays as it was
    record_stops()  # a Ctrl-C during the imports below ends the command once they are done, in one line

from launch.xla_cpu import turn_off_ynn_fusions  # noqa: E402

turn_off_ynn_fusions()  # before anything starts JAX's backend

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from agents import AGENTS  # noqa: E402
from datasets.buffer import GroupBuffer, default_capacity  # noqa: E402
from envs.factory import make_env_pool  # noqa: E402
from envs.registry import FAMILIES, UnknownTaskError, resolve_task  # noqa: E402
from launch.command_line import (  # noqa: E402
    CommandLineParser,
    UserError,
    check_writable_folder,
    first_line,
    out_of_memory,
    stop_on_ctrl_c,
)
from launch.compiled import offline_chunk, online_chunk, policy_action, signals_held  # noqa: E402
from launch.online_envs import OnlineEnvs  # noqa: E402
from launch.trace_summary import print_summary  # noqa: E402

INT32_LIMIT = 2**31  # counts and sizes the device holds in int32

# (observation size, action size, dataset rows) of each OGBench family (singletask envs, official data).
SIZES = {
    'cube-single-play': (28, 5, 1_000_000),
    'cube-double-play': (37, 5, 1_000_000),
    'scene-play': (40, 5, 1_000_000),
    'puzzle-3x3-play': (55, 5, 1_000_000),
    'puzzle-4x4-play': (83, 5, 1_000_000),
    'antmaze-large-navigate': (29, 8, 1_000_000),
    'antmaze-giant-navigate': (29, 8, 1_000_000),
    'humanoidmaze-medium-navigate': (69, 21, 2_000_000),
    'humanoidmaze-large-navigate': (69, 21, 2_000_000),
    'antsoccer-arena-navigate': (42, 8, 1_000_000),
}
# D4RL AntMaze: the ant's xy, then its 27 joint numbers; about 1M rows each.
SIZES.update({f.name: (29, 8, 1_000_000) for f in FAMILIES.values() if f.source == 'd4rl'})


def random_data(obs_dim, act_dim, rows, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        observations=rng.normal(size=(rows, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (rows, act_dim)).astype(np.float32),
        next_observations=rng.normal(size=(rows, obs_dim)).astype(np.float32),
        rewards=-rng.integers(0, 2, rows).astype(np.float32),
        masks=np.ones(rows, np.float32),
        terminals=np.zeros(rows, np.float32),
    )


@signals_held()  # it compiles
def make_agents(module, config, data, runs):
    keys = jax.random.split(jax.random.PRNGKey(0), runs)
    example = (jnp.asarray(data['observations'][:1]), jnp.asarray(data['actions'][:1]))
    return jax.vmap(lambda key: module.Agent.create(key, *example, config))(keys)


def timed(fn, min_seconds, compile=None):
    """Calls `compile` (default: `fn`, which blocks on its result) once to compile, then `fn` until
    `min_seconds` have passed; → (calls per second, first call's seconds). Ctrl-C waits for the first call
    (see signals_held): a `compile` that runs less than `fn` keeps that wait short."""
    started = time.perf_counter()
    with signals_held():
        (compile or fn)()
    compile_s = time.perf_counter() - started
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < min_seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - started), compile_s


def matmul_probe(min_seconds):
    """FLOP/s of a large float32 matmul on the device: the ceiling the agents' updates are compared to."""
    n = 2048 if jax.default_backend() == 'cpu' else 8192
    a = jnp.ones((n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    rate, _ = timed(lambda: matmul(a).block_until_ready(), min_seconds)
    return rate * 2 * n**3


def copy_probe(min_seconds):
    """Bytes/s of an elementwise op over a large float32 array (each element read once and written once):
    the memory bandwidth the updates' traffic is compared to."""
    n = (32 if jax.default_backend() == 'cpu' else 512) * 2**20
    a = jnp.ones(n, jnp.float32)
    double = jax.jit(lambda x: 2 * x)
    rate, _ = timed(lambda: double(a).block_until_ready(), min_seconds)
    return rate * 2 * a.nbytes


def step_cost_line(runs, step_ms):
    """The least-squares line through (R, ms per stacked step): a fixed part a (what a step costs
    whatever R is) and a part b per run (the work that grows with R). Stacking R runs then gives R·(a + b) / (a + b·R)
    times one run, which grows with R toward (a + b) / b when a > 0."""
    slope, fixed = np.polyfit(runs, step_ms, 1)
    line = f'stacked step ≈ {fixed:.3f} ms + {slope:.3f} ms × runs (least squares over the rows above): '
    if fixed <= 0:
        return line + 'no fixed part to share: by this line, stacking does not beat one run'
    if slope <= 0:
        return line + 'no part grows with the runs'
    return line + f'by this line, stacking tends toward {(fixed + slope) / slope:.2f}× one run as runs grow'


def bench_agent(name, module, args, family, data, probes):
    config = module.get_config(family, dict(hidden_dims=args.hidden_dims), mode='offline')
    batch_size, k = config.batch_size, args.updates_per_call
    one = jax.tree_util.tree_map(lambda x: x[0], make_agents(module, config, data, 1))

    # The plain loop: a batch drawn on the host each step, one jitted update per call.
    update = jax.jit(lambda agent, batch: agent.update(batch))
    rng = np.random.default_rng(0)
    state = {'agent': one}

    def host_batch(idx):
        batch = {key: v[idx] for key, v in data.items()}
        batch['next_actions'] = data['actions'][(idx + 1) % len(data['actions'])]  # as the buffer gives it (ReBRAC)
        return batch

    def plain_steps():
        for _ in range(args.plain_steps):
            state['agent'], info = update(state['agent'], host_batch(rng.integers(0, len(data['masks']), batch_size)))
        jax.block_until_ready(info)

    batch = host_batch(np.arange(batch_size) % len(data['masks']))  # the timed calls' shapes, with fewer rows too
    plain_rate, _ = timed(plain_steps, args.seconds, compile=lambda: jax.block_until_ready(update(one, batch)))
    with signals_held():
        cost = update.lower(one, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops, traffic = (float(cost.get(key, float('nan'))) for key in ('flops', 'bytes accessed'))

    rows, profiles = [], []
    for runs in args.stack:
        with signals_held():  # the rings compile
            buffer = GroupBuffer.of_one_task(data, runs=runs)
        agents = make_agents(module, config, data, runs)
        data_keys = jax.random.split(jax.random.PRNGKey(1), runs)
        holder = {'agents': agents, 'step': 0}

        def fused_chunk(holder=holder, buffer=buffer, keys=data_keys):
            holder['agents'], info, _ = offline_chunk(holder['agents'], buffer, keys, holder['step'], k, batch_size)
            holder['step'] += k
            jax.block_until_ready(info)

        def compile_chunk(buffer=buffer, keys=data_keys, agents=agents):  # the length is traced: 1 update compiles K
            jax.block_until_ready(offline_chunk(agents, buffer, keys, 0, 1, batch_size))

        rate, _ = timed(fused_chunk, args.seconds, compile=compile_chunk)
        rows.append((runs, rate * k * runs))
        if args.profile:
            trace_dir = os.path.join(args.profile, f'{name}-{runs}-stacked')
            with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
                fused_chunk()
            profiles.append((runs, trace_dir))
    single = next((rate for runs, rate in rows if runs == 1), None)  # the ratios' base: one run, if timed
    print(f'\n## {name}: hidden {config.hidden_dims}, batch {batch_size}, K = {k} updates per call')
    print(f'GFLOP per update (XLA cost analysis): {flops / 1e9:.4f}; GB read and written: {traffic / 1e9:.4f}')
    print(f'plain per-step loop: {plain_rate * args.plain_steps:,.0f} updates/s')
    print(
        '| runs stacked | updates/s (all runs) | ratio to one run | vs plain loop | ms per stacked step | GFLOP/s '
        '| of matmul probe | GB/s | of copy probe |'
    )
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    matmul_rate, copy_rate = probes
    for runs, rate in rows:
        achieved, moved = rate * flops, rate * traffic
        print(
            f'| {runs} | {rate:,.0f} | {f"{rate / single:.2f}×" if single else "—"} | '
            f'{rate / (plain_rate * args.plain_steps):.2f}× | '
            f'{1e3 * runs / rate:.3f} | {achieved / 1e9:,.1f} | {100 * achieved / matmul_rate:.1f} % | '
            f'{moved / 1e9:,.1f} | {100 * moved / copy_rate:.1f} % |'
        )
    if len(rows) > 1:
        print(step_cost_line([runs for runs, _ in rows], [1e3 * runs / rate for runs, rate in rows]))
    for runs, trace_dir in profiles:
        unit = 'update' if runs == 1 else 'stacked step'  # a stacked step: one update of each of the runs
        print(f'\n### Profile: one chunk of {k} updates of {runs} stacked run(s), per {unit} ({trace_dir})')
        print_summary(trace_dir, k, top=args.profile_top, unit=unit)


def bench_o2o(args, family_name, runs_list):
    """Env steps/s of R runs acting, appending and updating once per env step, as the O2O loop does;
    with --profile, then a traced stretch of the same steps and where its time went."""
    task = resolve_task(family_name)
    obs_dim, act_dim, _ = SIZES[task.family.name]
    module = AGENTS['fav']
    config = module.get_config(task.family, dict(hidden_dims=args.hidden_dims), mode='o2o')
    data = random_data(obs_dim, act_dim, args.rows)
    print(f'\n## O2O on {task.name} envs (FAV, hidden {config.hidden_dims}): one update per env step')
    print(
        '| runs | env steps/s (all runs) | per run | env stepping | compiled call | other host work '
        '| ms per env step: in the loop / alone |'
    )
    print('| --- | --- | --- | --- | --- | --- | --- |')
    profiles = []
    for runs in runs_list:
        pool = make_env_pool([task] * runs)
        extra = args.profile_steps if args.profile else 0
        with signals_held():  # the rings compile
            buffer = GroupBuffer.of_one_task(data, runs=runs, capacity=args.rows + args.online_steps + extra + 1)
        agents = make_agents(module, config, data, runs)
        keys = jax.random.split(jax.random.PRNGKey(1), runs)
        online = OnlineEnvs(list(range(runs)), task.family.reward_shift)  # the O2O loop's env stepping
        online.start(pool)
        # The envs stepped alone, with no compiled calls between their steps: against the env stepping
        # inside the loop below, this shows whether the loop's host work slows the envs down.
        random_actions = np.random.default_rng(0).uniform(-1, 1, (args.online_steps, runs, act_dim))
        started = time.perf_counter()
        for actions in random_actions.astype(np.float32):
            online.step(actions)
        env_alone = (time.perf_counter() - started) / args.online_steps
        actions = np.asarray(policy_action(agents, jnp.asarray(online.observations), keys, 0))
        state = dict(agents=agents, buffer=buffer, actions=actions)

        def env_step(step, state=state, online=online, keys=keys):
            """One env step of every run, as the O2O loop makes it → (seconds in the env, in the calls)."""
            t0 = time.perf_counter()
            transition = online.step(state['actions'])
            t1 = time.perf_counter()
            # As the O2O loop: one transfer to the device, two compiled calls, one transfer back.
            transition, observations = jax.device_put(
                ({k: v[:, None] for k, v in transition.items()}, online.observations)
            )
            t2 = time.perf_counter()
            state['agents'], state['buffer'], _, finite, next_actions = online_chunk(
                state['agents'], state['buffer'], transition, keys, step, config.batch_size, observations, keys
            )
            state['actions'], _ = jax.device_get((next_actions, finite))
            return t1 - t0, time.perf_counter() - t2

        with signals_held():
            env_step(0)  # compiles
        spent = dict(env=0.0, call=0.0)
        started = time.perf_counter()
        for step in range(1, args.online_steps + 1):
            env_s, call_s = env_step(step)
            spent['env'] += env_s
            spent['call'] += call_s
        total = time.perf_counter() - started
        rate = args.online_steps * runs / total
        env_share, call_share = spent['env'] / total, spent['call'] / total
        print(
            f'| {runs} | {rate:,.1f} | {rate / runs:,.1f} | {100 * env_share:.0f} % | {100 * call_share:.0f} % | '
            f'{100 * (1 - env_share - call_share):.0f} % | {1e3 * spent["env"] / args.online_steps:.2f} / '
            f'{1e3 * env_alone:.2f} |'
        )
        if args.profile:
            trace_dir = os.path.join(args.profile, f'o2o-{runs}-runs')
            with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
                for step in range(args.online_steps + 1, args.online_steps + 1 + args.profile_steps):
                    env_step(step)
            profiles.append((runs, trace_dir))
        pool.close()
    for runs, trace_dir in profiles:
        print(f'\n### Profile: {args.profile_steps} env steps of {runs} O2O run(s), per env step ({trace_dir})')
        print_summary(trace_dir, args.profile_steps, top=args.profile_top)


def device_memory():
    """Bytes of memory on the default device, or None when it does not say (CPU: the host's RAM)."""
    stats = jax.devices()[0].memory_stats() or {}
    if 'bytes_limit' in stats:
        return stats['bytes_limit']
    if jax.default_backend() == 'cpu':
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    return None


def update_working_bytes(agent, batch):
    """Bytes one update holds beyond its inputs, by XLA's memory analysis of it compiled on this device: the
    new agent state (the old one is not reused for it) and the scratch buffers; 0 where XLA does not say."""
    with signals_held():  # it compiles
        analysis = jax.jit(lambda a, b: a.update(b)).lower(agent, batch).compile().memory_analysis()
    if analysis is None:
        return 0
    return analysis.output_size_in_bytes + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes


def bench_memory(args):
    """Bytes of one O2O run on the device: its ring and agent state from array sizes, and one update's
    working memory from XLA (nothing allocated)."""
    memory = device_memory()
    print('\n## Device memory of an O2O run (its replay ring of max(2M, N + 1) rows, agent state, update; FAV)')
    print(
        '| family | ring (data + online rows) | agent state | update (new state + scratch) | per run | runs that fit |'
    )
    print('| --- | --- | --- | --- | --- | --- |')
    module = AGENTS['fav']
    for family_name in ('cube-double-play', 'humanoidmaze-large-navigate'):
        task = resolve_task(family_name)
        obs_dim, act_dim, rows = SIZES[family_name]
        row_floats = 2 * obs_dim + act_dim + 3  # observations, next_observations, actions, rewards, masks, terminals
        ring = 4 * default_capacity(rows) * row_floats
        config = module.get_config(task.family, dict(hidden_dims=args.hidden_dims), mode='o2o')
        example = (jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim)))
        agent = jax.eval_shape(lambda key, c=config, e=example: module.Agent.create(key, *e, c), jax.random.PRNGKey(0))
        state = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(agent))
        sizes = dict(observations=obs_dim, next_observations=obs_dim, actions=act_dim, next_actions=act_dim)
        batch = {k: jax.ShapeDtypeStruct((config.batch_size, d), jnp.float32) for k, d in sizes.items()}
        batch.update(
            {k: jax.ShapeDtypeStruct((config.batch_size,), jnp.float32) for k in ('rewards', 'masks', 'terminals')}
        )
        working = update_working_bytes(agent, batch)
        per_run = ring + state + working
        fits = 'unknown' if memory is None else f'{int(0.9 * memory // per_run)}'
        gib = [f'{b / 2**30:.2f} GiB' for b in (ring, state, working, per_run)]
        print(f'| {family_name} | {" | ".join(gib)} | {fits} |')
    if memory is not None:
        print(f'(device memory {memory / 2**30:.1f} GiB, 90 % of it usable)')


def parse_args(argv=None):
    """The command line, checked whole before any benchmark: (args, agent names, O2O run counts, task)."""
    p = CommandLineParser(prog='launch/bench.py', description=__doc__.splitlines()[0])
    p.add_argument(
        '--env',
        default='cube-double',
        help='family or task (D4RL AntMaze included) whose sizes the update benchmark uses (default: cube-double)',
    )
    p.add_argument(
        '--agents',
        default=','.join(AGENTS),
        help=f'comma-separated, from {", ".join(AGENTS)}; empty: none (default: all)',
    )
    p.add_argument('--hidden-dims', default='512,512,512,512', help="every network's widths (default: 512,512,512,512)")
    p.add_argument(
        '--stack', default='1,4,8,40', help='numbers of stacked runs to time, ratios to 1 (default: 1,4,8,40)'
    )
    p.add_argument('--o2o-runs', default='1,8', help='numbers of O2O runs to time; empty: skip (default: 1,8)')
    p.add_argument('--updates-per-call', type=int, default=100, help='K of the fused path (default: 100)')
    p.add_argument('--plain-steps', type=int, default=20, help='updates per timed call of the plain loop (default: 20)')
    p.add_argument('--online-steps', type=int, default=200, help='timed env steps per O2O measurement (default: 200)')
    p.add_argument(
        '--rows', type=int, default=100_000, help='dataset rows on the device, random data (default: 100000)'
    )
    p.add_argument(
        '--seconds', type=float, default=3.0, help='time each measurement at least this many seconds (default: 3.0)'
    )
    p.add_argument(
        '--profile',
        metavar='DIR',
        help='also trace one fused chunk per stacked-run count and the O2O steps into DIR; print where the time went',
    )
    p.add_argument('--profile-steps', type=int, default=50, help='env steps traced per O2O measurement (default: 50)')
    p.add_argument(
        '--profile-top', type=int, default=20, help='events listed per profile, most self time first (default: 20)'
    )
    args = p.parse_args(argv)
    try:
        args.hidden_dims = tuple(int(w) for w in args.hidden_dims.split(','))
        args.stack = [int(r) for r in args.stack.split(',')]
        o2o_runs = [int(r) for r in args.o2o_runs.split(',') if r.strip()]
    except ValueError:
        p.error('--hidden-dims, --stack and --o2o-runs take comma-separated integers, e.g. 1,4,8')
    agents = [name.strip() for name in args.agents.split(',') if name.strip()]
    unknown = sorted(set(agents) - set(AGENTS))
    if unknown:
        p.error(f'unknown agent {unknown[0]}; valid: {", ".join(AGENTS)}')
    if len(set(agents)) < len(agents):
        p.error('--agents names each agent once, e.g. fav,fql')
    for name in ('updates_per_call', 'plain_steps', 'online_steps', 'rows', 'profile_steps', 'profile_top'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be at least 1, got {getattr(args, name)}')
        if getattr(args, name) >= INT32_LIMIT:  # counted in int32 on the device (an OverflowError, or XLA's abort)
            p.error(f'--{name.replace("_", "-")} must be < {INT32_LIMIT}, got {getattr(args, name)}')
    if not 0 < args.seconds < math.inf:  # written so that nan is refused too: it timed 2 calls; inf never ended
        p.error(f'--seconds must be > 0 and finite, got {args.seconds}')
    counts = [*args.hidden_dims, *args.stack, *o2o_runs]
    if min(counts) < 1 or max(counts) >= INT32_LIMIT:
        p.error(f'--hidden-dims, --stack and --o2o-runs take positive integers below {INT32_LIMIT}, e.g. 1,4,8')
    if len(set(args.stack)) < len(args.stack) or len(set(o2o_runs)) < len(o2o_runs):
        p.error('--stack and --o2o-runs name each count once, e.g. 1,4,8')
    if args.profile is not None:
        try:
            check_writable_folder('--profile', args.profile)  # before the benchmark's minutes, not after
        except UserError as e:
            p.error(str(e))

    try:
        task = resolve_task(args.env)
    except UnknownTaskError as e:
        p.error(str(e))
    return args, agents, o2o_runs, task


def main():
    args, agents, o2o_runs, task = parse_args()
    obs_dim, act_dim, _ = SIZES[task.family.name]
    try:
        data = random_data(obs_dim, act_dim, args.rows)
    except MemoryError:  # numpy's 'Unable to allocate 26.9 TiB', in a traceback
        print(
            f'error: --rows {args.rows}: random data of that many rows does not fit in memory; pass fewer',
            file=sys.stderr,
        )
        return 2
    probes = matmul_probe(args.seconds), copy_probe(args.seconds)
    device = jax.devices()[0]
    print(
        f'# device: {device.device_kind} ({jax.default_backend()}, {os.cpu_count()} CPU cores), jax {jax.__version__}; '
        f'{task.family.name} sizes (obs {obs_dim}, act {act_dim}), {args.rows:,} random rows; '
        f'matmul probe {probes[0] / 1e9:,.1f} GFLOP/s, copy probe {probes[1] / 1e9:,.1f} GB/s; '
        f'XLA_FLAGS: {os.environ.get("XLA_FLAGS") or "(none)"}'
    )
    try:
        for name in agents:
            bench_agent(name, AGENTS[name], args, task.family, data, probes)
        if o2o_runs:
            bench_o2o(args, 'cube-double', o2o_runs)
        bench_memory(args)
    except (jax.errors.JaxRuntimeError, MemoryError) as e:
        if not out_of_memory(e):
            raise
        print(
            f'error: out of memory ({first_line(e)}); give smaller --hidden-dims, --stack, --o2o-runs, --rows or '
            '--online-steps',
            file=sys.stderr,
        )
        return 1


if __name__ == '__main__':
    sys.exit(stop_on_ctrl_c(main))
