"""Does FAV's actor reach the tilted target? Trains the real FAV update on one-state bandits with a known answer.

    python launch/diagnose.py --out results/diagnose          # the default set (minutes on a 2-core CPU)
    python launch/diagnose.py --quick --out /tmp/diag          # a few seconds' smoke version

The critic is replaced by a fixed known Q (agent.train_critic=False) and the dataset by samples of a known
behavior (launch/bandits.py); everything else is agents/fav.py's update, run by launch/compiled.py's loop.
β is folded into the fixed Q (the agent runs with β = 1 and critic params {'beta': β}), so the β values of a
setting train side by side under one `jax.vmap`. Writes results.md (tables) and PNG figures under --out.
"""

import dataclasses
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

from agents.fav import FAVAgent, FAVConfig  # noqa: E402
from datasets.buffer import GroupBuffer  # noqa: E402
from datasets.files import atomic_write  # noqa: E402
from launch import bandits  # noqa: E402
from launch.command_line import CommandLineParser, UserError, check_writable_folder, stop_on_ctrl_c  # noqa: E402
from launch.compiled import offline_chunk, signals_held  # noqa: E402

NUM_EVAL_SAMPLES = 4096
DATASET_SIZE = 20_000
CHUNKS = 10  # training runs as CHUNKS compiled calls; the residual reported is the last chunk's mean


@dataclasses.dataclass(frozen=True)
class Setting:
    """One trained configuration (all β of it train together)."""

    problem: str
    sigma: float
    prior_score: str = 'clipped'
    reference: str = 'dataset'
    num_samples: int = 8
    svgd_steps: int = 1
    repulsive: bool = True

    @property
    def variant(self):
        changes = [f'M={self.num_samples}'] if self.num_samples != 8 else []
        changes += [f'svgd_steps={self.svgd_steps}'] if self.svgd_steps != 1 else []
        changes += ['no repulsion'] if not self.repulsive else []
        return ', '.join(changes) or 'paper'


@dataclasses.dataclass(frozen=True)
class Plan:
    problems: tuple
    sigmas: tuple
    betas: tuple
    focus_sigma: float  # σ of the density figures, the bc_flow rows and the ablations
    bc_flow_problems: tuple
    ablation_problems: tuple
    ablation_num_samples: tuple
    ablation_svgd_steps: int
    steps: int
    hidden_dims: tuple = (64, 64)
    batch_size: int = 128

    def __post_init__(self):
        if self.steps <= 0 or self.steps % CHUNKS:  # train runs steps // CHUNKS per chunk: a remainder was dropped
            lower = self.steps // CHUNKS * CHUNKS
            fits = f'{lower} or {lower + CHUNKS}' if lower > 0 else f'{CHUNKS}'
            raise ValueError(
                f'Plan steps={self.steps}: training runs in {CHUNKS} equal chunks, so steps must be a positive '
                f'multiple of {CHUNKS} (e.g. {fits})'
            )


FULL = Plan(
    problems=('gauss1d', 'mix1d', 'mix2d', 'prod5d'),
    sigmas=(0.05, 0.1, 0.5),
    betas=(0.0, 2.0, 8.0),
    focus_sigma=0.1,
    bc_flow_problems=('mix1d', 'mix2d'),
    ablation_problems=('gauss1d', 'mix1d'),
    ablation_num_samples=(1, 4, 32),
    ablation_svgd_steps=4,
    steps=1500,
)
QUICK = Plan(
    problems=('gauss1d',),
    sigmas=(0.1,),
    betas=(0.0, 4.0),
    focus_sigma=0.1,
    bc_flow_problems=(),
    ablation_problems=(),
    ablation_num_samples=(),
    ablation_svgd_steps=2,
    steps=50,
    hidden_dims=(16, 16),
    batch_size=32,
)
PRIORS = ('softmax', 'clipped')


def settings_of(plan):
    """The grid (dataset reference), the bc_flow rows, then the ablations (clipped prior, dataset reference)."""
    grid = [Setting(p, s, prior) for p in plan.problems for s in plan.sigmas for prior in PRIORS]
    grid += [Setting(p, plan.focus_sigma, prior, 'bc_flow') for p in plan.bc_flow_problems for prior in PRIORS]
    sigma = plan.focus_sigma
    for p in plan.ablation_problems:
        grid += [Setting(p, sigma, num_samples=m) for m in plan.ablation_num_samples]
        grid += [Setting(p, sigma, svgd_steps=plan.ablation_svgd_steps), Setting(p, sigma, repulsive=False)]
    return grid


def fixed_q_critic(critic, problem):
    """The agent's critic TrainState answering β·Q(a) (one ensemble member), β taken from its params."""

    def apply_fn(params, observations, actions):
        return (params['beta'] * problem.q_total(actions))[None]

    return critic.replace(apply_fn=apply_fn)


def train(setting, plan, betas, seed=0):
    """Trains one agent per β (vmapped) on the setting's bandit; returns (actor samples (β, n, d), the last
    chunk's mean metrics per β, whether every update's metrics were finite)."""
    problem = bandits.PROBLEMS[setting.problem]
    actions = problem.sample_behavior(np.random.default_rng(seed), DATASET_SIZE)
    n = len(actions)
    ones = np.ones((n, 1), np.float32)
    zeros = np.zeros(n, np.float32)
    data = dict(observations=ones, actions=actions, next_observations=ones, rewards=zeros, masks=zeros, terminals=ones)
    config = FAVConfig(
        hidden_dims=plan.hidden_dims,
        batch_size=plan.batch_size,
        lr=1e-3,
        beta=1.0,  # β lives in the fixed Q's params
        sigma=setting.sigma,
        prior_score=setting.prior_score,
        reference=setting.reference,
        num_samples=setting.num_samples,
        svgd_steps=setting.svgd_steps,
        repulsive=setting.repulsive,
        train_critic=False,
    ).validate()

    def create(key, beta):
        agent = FAVAgent.create(key, jnp.asarray(ones[:1]), jnp.asarray(actions[:1], jnp.float32), config)
        critic = fixed_q_critic(agent.critic, problem).replace(params={'beta': beta}, opt_state=())
        return agent.replace(critic=critic, target_critic_params={'beta': beta})

    keys = jax.random.split(jax.random.PRNGKey(seed), len(betas))
    with signals_held():  # the rings and the agents compile
        buffer = GroupBuffer.of_one_task(data, runs=len(betas))  # one run per β, all on the same data and batches
        agents = jax.vmap(create)(keys, jnp.asarray(betas, jnp.float32))
    length = plan.steps // CHUNKS
    data_keys = jnp.broadcast_to(jax.random.PRNGKey(seed + 1), (len(betas), 2))
    all_finite = True
    for i in range(CHUNKS):
        agents, info, finite = offline_chunk(agents, buffer, data_keys, i * length, length, plan.batch_size)
        all_finite = all_finite and bool(np.all(finite))
    obs = jnp.ones((NUM_EVAL_SAMPLES, 1))
    with signals_held():  # it compiles
        samples = jax.vmap(lambda a: a.sample_actions(obs, jax.random.PRNGKey(seed + 2)))(agents)
    return np.asarray(samples, np.float64), {k: np.asarray(v) for k, v in info.items()}, all_finite


def evaluate(setting, beta, samples, rng):
    """Distances between the actor's samples and the exact target (and, in 1-D, the update's fixed point)."""
    problem = bandits.PROBLEMS[setting.problem]
    sigma = setting.sigma
    target = bandits.target_samples(problem, sigma, beta, NUM_EVAL_SAMPLES, rng)
    row = dict(target_mean=bandits.target_mean(problem, sigma, beta), actor_mean=samples.mean(0))
    row['target_std'] = bandits.target_std(problem, sigma, beta)  # exact: rows of one target agree
    row['actor_std'] = float(np.linalg.norm(samples.std(0)))
    row['coverage'] = bandits.mode_coverage(problem, samples, target)
    if problem.dim == 1:
        row['w1'] = bandits.wasserstein_1d(problem, samples, sigma, beta)
        num_reference = 1 if setting.reference == 'dataset' else FAVConfig.num_reference
        log_prior = bandits.fixed_point_log_prior(problem, sigma, setting.prior_score, num_reference)
        row['w1_fixed_point'] = bandits.wasserstein_1d(problem, samples, sigma, beta, log_prior)
        row['fixed_point_mean'] = bandits.target_mean(problem, sigma, beta, log_prior)
    else:
        row['mmd'], row['energy'] = bandits.mmd_and_energy(jnp.asarray(samples), jnp.asarray(target))
    # The behavior tilted by exp(βQ) itself, without the kernel's smoothing (σ = 0 in the target): the
    # nominal target moves away from it as σ grows. Its own generator, so the columns above stay as they were.
    if problem.dim == 1:
        row['tilted'] = bandits.wasserstein_1d(problem, samples, 0.0, beta)
    else:
        tilted = bandits.target_samples(problem, 0.0, beta, NUM_EVAL_SAMPLES, np.random.default_rng(1))
        row['tilted'] = bandits.mmd_and_energy(jnp.asarray(samples), jnp.asarray(tilted))[0]
    return row


def run_plan(plan, log=print):
    rows, samples_by_setting = [], {}
    rng = np.random.default_rng(0)
    for i, setting in enumerate(settings_of(plan)):
        start = time.time()
        samples, info, finite = train(setting, plan, plan.betas)
        samples_by_setting[setting] = samples
        for b, beta in enumerate(plan.betas):
            row = dict(setting=setting, beta=beta, finite=finite, **evaluate(setting, beta, samples[b], rng))
            row.update(residual=float(info['phi_norm'][b]), kernel=float(info['kernel_offdiag_mean'][b]))
            rows.append(row)
        log(f'[{i + 1}/{len(settings_of(plan))}] {setting} {time.time() - start:.1f}s')
    return rows, samples_by_setting


# ---------------------------------------------------------------------------------------------------
# Output


def _fmt(value):
    value = np.atleast_1d(value)
    return ' '.join(f'{v:+.3f}' for v in value[:2]) + (' …' if len(value) > 2 else '')


def _cell(row, key):
    """A number, or a dash where the measure does not apply (fixed-point W1 past 1-D, energy in 1-D)."""
    return f'{row[key]:.3f}' if key in row else '—'


def markdown_tables(rows, plan, seconds):
    """The main grid and the ablations as Markdown, with the distance used per dimension."""
    head = (
        '| problem | prior | reference | σ | β | variant | distance | to p_b·exp(βQ) | fixed-point W1 | energy | '
        'target mean | actor mean | target/actor std | mode coverage | ‖φ‖ after training | mean off-diag k |\n'
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n'
    )
    lines = []
    for r in rows:
        s = r['setting']
        distance = f'W1 {r["w1"]:.3f}' if 'w1' in r else f'MMD {r["mmd"]:.3f}'
        lines.append(
            f'| {s.problem} | {s.prior_score} | {s.reference} | {s.sigma:g} | {r["beta"]:g} | {s.variant} | '
            f'{distance}{"" if r["finite"] else " (non-finite)"} | {r["tilted"]:.3f} | {_cell(r, "w1_fixed_point")} | '
            f'{_cell(r, "energy")} | {_fmt(r["target_mean"])} | {_fmt(r["actor_mean"])} | '
            f'{r["target_std"]:.3f} / {r["actor_std"]:.3f} | {r["coverage"]:.2f} | {r["residual"]:.3f} | '
            f'{r["kernel"]:.2f} |'
        )
    paper = [line for line, r in zip(lines, rows, strict=True) if r['setting'].variant == 'paper']
    ablation = [line for line, r in zip(lines, rows, strict=True) if r['setting'].variant != 'paper']
    ablation += [line for line, r in zip(lines, rows, strict=True) if _is_ablation_base(r['setting'], plan)]
    return (
        f'# FAV on bandits with a known answer\n\n{len(rows)} rows, {seconds:.0f} s. Distance: 1-D W1 to the exact '
        f'target p̂_ref·exp(βQ); 2-D/5-D MMD with kernel exp(-‖x-y‖²/(2·{bandits.MMD_LENGTHSCALE}²)) and energy '
        'distance, against 4,096 target samples. To p_b·exp(βQ): the same distance to the behavior tilted by '
        'exp(βQ) without the kernel smoothing (the nominal target at σ → 0). Fixed-point W1 (1-D): against the '
        "density whose score is the update's KDE score averaged over its reference draws. Mode coverage: target "
        'mass covered, per mode cell. '
        '‖φ‖: mean SVGD step over the last tenth of training. Std: norm of the per-dimension stds.\n\n'
        '## Grid\n\n'
        + head
        + '\n'.join(paper)
        + ('\n\n## Ablations\n\n' + head + '\n'.join(ablation) if ablation else '')  # --quick runs none
        + '\n'
    )


def _is_ablation_base(setting, plan):
    return setting == Setting(setting.problem, plan.focus_sigma) and setting.problem in plan.ablation_problems


def output_names(plan):
    """The files main() writes into --out: results.md and each problem's two figures (figures() below)."""
    return ['results.md'] + [f'{kind}_{name}.png' for name in plan.problems for kind in ('density', 'distance')]


def figures(rows, samples_by_setting, plan, out, plt):
    """density_<problem>.png (actor vs target at σ = ablation σ) and distance_<problem>.png (distance vs β)."""
    written = []
    for name in plan.problems:
        problem = bandits.PROBLEMS[name]
        sigma = plan.focus_sigma
        fig, axes = plt.subplots(2, len(plan.betas), figsize=(2.6 * len(plan.betas), 4.6), squeeze=False)
        for row_i, prior in enumerate(('softmax', 'clipped')):
            samples = samples_by_setting[Setting(name, sigma, prior)]
            for b, beta in enumerate(plan.betas):
                ax = axes[row_i, b]
                _density_panel(ax, problem, sigma, beta, prior, samples[b])
                ax.set_title(f'{prior}, β={beta:g}', fontsize=8)
                ax.tick_params(labelsize=6)
        fig.suptitle(f'{name}: actor samples vs exact target (σ={sigma:g}, reference=dataset)', fontsize=9)
        fig.tight_layout()
        written.append(_save(fig, out, f'density_{name}.png', plt))

        fig, ax = plt.subplots(figsize=(4, 3))
        for sigma in plan.sigmas:
            for prior, style in (('softmax', '--'), ('clipped', '-')):
                picked = [r for r in rows if r['setting'] == Setting(name, sigma, prior)]
                distance = [r['w1'] if 'w1' in r else r['mmd'] for r in picked]
                ax.plot([r['beta'] for r in picked], distance, style, marker='o', label=f'σ={sigma:g} {prior}')
        ax.set_xlabel('β')
        ax.set_ylabel('W1 to target' if problem.dim == 1 else 'MMD to target')
        ax.set_title(f'{name}, reference=dataset', fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        written.append(_save(fig, out, f'distance_{name}.png', plt))
    return written


def _density_panel(ax, problem, sigma, beta, prior, samples):
    if problem.dim == 1:
        points, probs = bandits.factor_target(problem, sigma, beta)
        dx = points[1, 0] - points[0, 0]
        ax.hist(samples[:, 0], bins=80, range=(-1, 1), density=True, color='tab:blue', alpha=0.5, label='actor')
        ax.plot(points[:, 0], probs / dx, 'k', lw=1, label='target')
        log_prior = bandits.fixed_point_log_prior(problem, sigma, prior, 1)
        _, fixed = bandits.factor_target(problem, sigma, beta, log_prior)
        ax.plot(points[:, 0], fixed / dx, 'r--', lw=1, label='fixed point')
        ax.legend(fontsize=5)
    elif problem.repeat == 1:
        points, probs = bandits.factor_target(problem, sigma, beta)
        n = bandits.GRID_2D
        axis = points[:n, 1]
        ax.contour(axis, axis, probs.reshape(n, n).T, levels=6, colors='k', linewidths=0.6)
        ax.scatter(samples[:1000, 0], samples[:1000, 1], s=1, alpha=0.4)
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
    else:  # product problem: the first coordinate's marginal
        points, probs = bandits.factor_target(problem, sigma, beta)
        dx = points[1, 0] - points[0, 0]
        ax.hist(samples[:, 0], bins=80, range=(-1, 1), density=True, alpha=0.5)
        ax.plot(points[:, 0], probs / dx, 'k', lw=1)


def _save(fig, out, name, plt):
    path = os.path.join(out, name)
    with atomic_write(path) as f:
        fig.savefig(f, format='png', dpi=80)
    plt.close(fig)
    return path


def main(argv=None):
    p = CommandLineParser(prog='launch/diagnose.py', description=__doc__.splitlines()[0])
    p.add_argument(
        '--out',
        default='results/diagnose',
        help='directory for results.md and the PNG figures (default: results/diagnose)',
    )
    p.add_argument('--quick', action='store_true', help='a small smoke version (seconds)')
    args = p.parse_args(argv)
    try:
        check_writable_folder('--out', args.out)  # before the minutes of training, not after
    except UserError as e:
        p.error(str(e))
    try:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('launch/diagnose.py needs matplotlib: pip install -e ".[diagnose]"', file=sys.stderr)
        return 2
    plan = QUICK if args.quick else FULL
    # A folder where one goes failed after the minutes of training, in a traceback, the figures before it written.
    in_the_way = [os.path.join(args.out, n) for n in output_names(plan) if os.path.isdir(os.path.join(args.out, n))]
    if in_the_way:
        p.error(f'--out {args.out}: {in_the_way[0]} is a folder, where a file goes; pass another --out')
    start = time.time()
    rows, samples = run_plan(plan)
    os.makedirs(args.out, exist_ok=True)
    written = figures(rows, samples, plan, args.out, plt)
    table = markdown_tables(rows, plan, time.time() - start)
    with atomic_write(os.path.join(args.out, 'results.md')) as f:
        f.write(table.encode())
    print(f'wrote {os.path.join(args.out, "results.md")} and {len(written)} figures in {time.time() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(stop_on_ctrl_c(main))
