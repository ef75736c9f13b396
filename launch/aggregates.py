"""rliable aggregates of one mode: IQM and mean with 95 % stratified-bootstrap confidence intervals,
and the probability of improvement of FAV (the first FAV variant, with `--variant`) over each other
agent (Agarwal et al., 2021).

rliable needs a (runs × tasks) score matrix per agent. So the aggregates use the tasks on which every
agent has a finished run, and per agent as many runs per task as its least-run task has (the lowest
seeds); the notes say what was used. An agent with no finished run on the suite's tasks yet (a sweep just
started) is left out, with a note, rather than leaving no task for the others.
"""

import dataclasses

import numpy as np
from rliable import library as rly
from rliable import metrics

from launch.results import MAIN_SCORE, base_agent


@dataclasses.dataclass
class Aggregates:
    mode: str
    tasks: list  # the tasks aggregated over
    runs: dict  # agent → runs per task used
    estimates: dict  # agent → {'IQM': (point, low, high), 'Mean': (...)}
    improvement: dict  # baseline → (P(reference > baseline), low, high)
    reference: str | None = None  # the agent compared with each other: FAV, or its first variant
    left_out: tuple = ()  # agents with no finished run on the suite's tasks


def probability_of_improvement(x, y):
    """P(X > Y) + P(X = Y)/2 averaged over tasks; (runs_x × tasks), (runs_y × tasks). The same number as
    rliable's `metrics.probability_of_improvement` (a Mann-Whitney U statistic per task), vectorized,
    so that thousands of bootstrap replicates take seconds instead of minutes."""
    greater = (x[:, None, :] > y[None, :, :]).mean(axis=(0, 1))
    equal = (x[:, None, :] == y[None, :, :]).mean(axis=(0, 1))
    return float(np.mean(greater + 0.5 * equal))


def score_matrices(results):
    """(tasks, {agent: runs × tasks matrix}) of the mode's main score, or ([], {}) if no task has finished
    runs of every agent that has any on the suite's tasks."""
    key = MAIN_SCORE[results.mode]
    scores = {a: results.scores(a, key) for a in results.agents}
    scores = {a: s for a, s in scores.items() if any(s.get(t) for t in results.suite_tasks)}
    tasks = [t for t in results.suite_tasks if scores and all(s.get(t) for s in scores.values())]
    if not tasks:
        return [], {}
    matrices = {}
    for agent, by_task in scores.items():
        runs = min(len(by_task[t]) for t in tasks)
        matrices[agent] = np.array([[by_task[t][s] for s in sorted(by_task[t])[:runs]] for t in tasks]).T
    return tasks, matrices


def compute(results, reps, seed=0):
    tasks, matrices = score_matrices(results)
    if not tasks:
        return Aggregates(results.mode, [], {}, {}, {})
    left_out = tuple(a for a in results.agents if a not in matrices)
    np.random.seed(seed)  # rliable's bootstrap draws from NumPy's global generator

    def iqm_and_mean(scores):
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])

    points, intervals = rly.get_interval_estimates(matrices, iqm_and_mean, reps=reps)
    estimates = {
        a: {name: (points[a][i], *intervals[a][:, i]) for i, name in enumerate(('IQM', 'Mean'))} for a in matrices
    }
    improvement = {}
    reference = next((a for a in results.agents if base_agent(a) == 'fav' and a in matrices), None)
    if reference is not None:
        pairs = {b: [matrices[reference], matrices[b]] for b in matrices if b != reference}
        if pairs:
            points, intervals = rly.get_interval_estimates(pairs, probability_of_improvement, reps=reps)
            improvement = {b: (float(points[b]), *np.ravel(intervals[b])) for b in pairs}
    runs = {a: m.shape[0] for a, m in matrices.items()}
    return Aggregates(results.mode, tasks, runs, estimates, improvement, reference, left_out)
