"""PNG figures of the benchmark: the summary bar chart, rliable interval plots and training curves."""

import os

import matplotlib

matplotlib.use('Agg')  # files only: no display needed (clusters, CI)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rliable import plot_utils  # noqa: E402

from launch.results import base_agent, display_name, read_curve  # noqa: E402

MODE_TITLES = {'offline': 'Offline', 'o2o': 'Offline-to-online'}


def _save(fig, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
    return path


def summary_bars(by_mode, path, published=None):
    """Suite average per agent, over the tasks it has finished runs on (named under each agent); O2O: the
    offline and the online score side by side. `published`: mode → agent → numbers, drawn as hatched
    outlines of the paper's (online) score beside the measured bars."""
    fig, axes = plt.subplots(1, len(by_mode), figsize=(4.5 * len(by_mode), 3.2), squeeze=False)
    for ax, (mode, results) in zip(axes[0], by_mode.items(), strict=True):
        agents = results.agents
        cells = [results.cell(a, results.suite_tasks) for a in agents]
        labels = ('offline', 'online') if mode == 'o2o' else ('measured',)
        colors = ('tab:blue', 'tab:orange')
        # (label, heights, stds, style) per bar of a group; a score with no finished run (RLPD's offline) is NaN.
        series = [
            (
                label,
                [np.nan if c[i].mean is None else c[i].mean for c in cells],
                [c[i].std or 0.0 for c in cells],
                dict(color=colors[i]),
            )
            for i, label in enumerate(labels)
        ]
        if published:
            numbers = [published[mode].get(base_agent(a)) for a in agents]  # a variant: its agent's numbers
            heights = [np.nan if n is None else n[-1] for n in numbers]
            label = 'published (paper, online)' if mode == 'o2o' else 'published (paper)'
            series.append((label, heights, None, dict(fill=False, hatch='//')))
        x = np.arange(len(agents))
        width = 0.7 if len(series) == 1 else 0.8 / len(series)
        for i, (label, heights, stds, style) in enumerate(series):
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar(x + offset, heights, width, yerr=stds, label=label, **style)
        covered = [
            f'{display_name(a)}\n{c[-1].tasks} task{"s" * (c[-1].tasks != 1)}'
            for a, c in zip(agents, cells, strict=True)
        ]
        ax.set_xticks(x, covered)
        ax.set_ylim(0, 100)
        ax.set_ylabel('average success (%)')
        ax.set_title(f'{MODE_TITLES[mode]}: suite average over tasks with runs', fontsize='medium')
        ax.legend(fontsize='small')
    return _save(fig, path)


def _label(aggregates, agent):
    """The agent's name, marked where it has 1 run per task: its bar is the point alone, not an interval."""
    name = display_name(agent)
    return f'{name} (1 run, no CI)' if aggregates.runs[agent] < 2 else name


def interval_plot(aggregates, path):
    agents = list(aggregates.estimates)
    points = {_label(aggregates, a): [aggregates.estimates[a][m][0] for m in ('IQM', 'Mean')] for a in agents}
    intervals = {
        _label(aggregates, a): np.array([[aggregates.estimates[a][m][i] for m in ('IQM', 'Mean')] for i in (1, 2)])
        for a in agents
    }
    fig, _ = plot_utils.plot_interval_estimates(
        points,
        intervals,
        ['IQM', 'Mean'],
        xlabel=f'{MODE_TITLES[aggregates.mode]} success (%)',
        row_height=0.8,
        xlabel_y_coordinate=-0.3,
    )
    return _save(fig, path)


def improvement_plot(aggregates, path):
    separator = '\t'  # labels may hold commas
    reference = _label(aggregates, aggregates.reference)
    labels = {b: f'{reference}{separator}{_label(aggregates, b)}' for b in aggregates.improvement}
    pairs = {labels[b]: v[0] for b, v in aggregates.improvement.items()}
    intervals = {labels[b]: np.array(v[1:]) for b, v in aggregates.improvement.items()}
    fig, ax = plt.subplots(figsize=(4, 0.6 + 0.5 * len(pairs)))
    plot_utils.plot_probability_of_improvement(pairs, intervals, pair_separator=separator, ax=ax)
    return _save(fig, path)


def training_curves(results, task, path):
    """Success vs step per agent on one task: the mean over seeds, ± std shaded (over the seeds that
    reached each evaluation step)."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for agent in results.agents:
        curves = [dict(zip(*read_curve(r), strict=True)) for r in results.runs_of(task, agent)]
        curves = [c for c in curves if c]  # runs with an evaluation so far: the seeds the legend counts
        steps = sorted({s for c in curves for s in c})
        if not steps:
            continue
        at_step = [[c[s] for c in curves if s in c] for s in steps]
        mean, std = np.array([np.mean(v) for v in at_step]), np.array([np.std(v) for v in at_step])
        line = ax.plot(steps, mean, label=f'{display_name(agent)} ({len(curves)} seeds)')[0]
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    offline_steps = {r.offline_steps for r in results.runs if r.task == task}
    if results.mode == 'o2o' and len(offline_steps) == 1:
        ax.axvline(offline_steps.pop(), color='gray', linestyle='--', linewidth=1, label='online phase starts')
    ax.set_xlabel('step')
    ax.set_ylabel('success (%)')
    ax.set_ylim(-2, 102)
    ax.set_title(task, fontsize='small')
    if ax.get_legend_handles_labels()[0]:  # runs with no evaluation yet draw nothing: matplotlib warned, in 2 lines
        ax.legend(fontsize='small')
    return _save(fig, path)
