"""Run directories → records → the numbers of the benchmark tables.

A run directory is any folder holding a `config.json` written by `launch/loop.py`; it is finished
once it also holds `final.json`. Scores are on the protocol's 0-100 scale. Aggregates follow the
paper: a task's score is the mean over seeds, an environment's (or the suite's) is the mean over
its tasks; "±" is the standard deviation over seeds. Runs that are missing or unfinished are
counted, never averaged as zero.
"""

import csv
import dataclasses
import os

import numpy as np

from envs.registry import SUITES, UnknownTaskError, resolve_task
from launch.run_logs import STOPPED_NAME, RunFileError, read_json

# The score a mode's tables show: offline runs have one, O2O runs show "offline → online".
SCORE_KEYS = {'offline': ('score',), 'o2o': ('offline_score', 'online_score')}
# The score the rliable aggregates (launch/aggregates.py) use: the run's final performance.
MAIN_SCORE = {'offline': 'score', 'o2o': 'online_score'}
DISPLAY_NAMES = {'fav': 'FAV', 'fql': 'FQL', 'iql': 'IQL', 'rebrac': 'ReBRAC', 'ifql': 'IFQL', 'rlpd': 'RLPD'}
TASK_ORDER = {name: i for i, name in enumerate(SUITES['offline'])}


class ResultsError(Exception):
    """Unreadable or absent runs: reported as one line naming the file, exit code 2."""


MISSING = object()
# config.json's keys that name a run or do not change its numbers (K updates per call gives the same
# result whatever K is); the others may tell two runs of one agent, task and seed apart.
NOT_OPTIONS = {
    'agent',
    'agent_config',
    'code_version',
    'dataset',
    'dataset_dir',
    'log_every',
    'max_eval_envs',
    'mode',
    'progress',
    'resume',
    'save_every',
    'seed',
    'task',
    'updates_per_call',
    'wandb',
    'workers',
}


# The types of the config.json values a run's record is built from (bool is refused where int is expected).
CONFIG_TYPES = {
    'mode': (str, 'a string'),
    'task': (str, 'a task name'),
    'agent': (str, 'a string'),
    'seed': (int, 'an integer'),
    'offline_steps': (int, 'an integer'),
    'agent_config': (dict, 'a JSON object'),
}


def _setting(settings, options, field):
    """An agent setting, else a run-level one; `MISSING` if the run has neither."""
    return settings.get(field, options.get(field, MISSING))


@dataclasses.dataclass(frozen=True)
class Run:
    path: str
    mode: str  # 'offline' or 'o2o'
    task: str  # full task name
    family: str  # environment name, e.g. 'cube-single-play'
    agent: str
    seed: int
    offline_steps: int
    final: dict | None  # final.json; None while the run is unfinished
    settings: dict = dataclasses.field(default_factory=dict)  # config.json's agent_config
    dataset_origin: str | None = None  # official, regenerated, generated, given or minari (None: not recorded)
    stopped: bool = False  # stopped on non-finite values (STOPPED_NAME in its directory), not finished
    online_steps: int | None = None  # O2O only
    # config.json's run-level settings that can change results (balanced_sampling, buffer_capacity, ...)
    options: dict = dataclasses.field(default_factory=dict)

    def setting(self, field):
        return _setting(self.settings, self.options, field)

    def score(self, key):
        return None if self.final is None else self.final.get(key)


def base_agent(label):
    """The agent of a label: 'fav' for 'fav' and for 'fav[prior_score=clipped]'."""
    return label.split('[', 1)[0]


def display_name(label):
    base = base_agent(label)
    return DISPLAY_NAMES.get(base, base.upper()) + label[len(base) :]


def _read_json(path):
    try:
        return read_json(path)
    except RunFileError as e:
        raise ResultsError(str(e)) from None


def find_run_dirs(root):
    if root == '':  # it read 'error:  is not a directory'
        raise ResultsError('the runs folder is empty: give the folder that holds the run directories, e.g. runs/')
    if not os.path.isdir(root):
        raise ResultsError(f'{root} is not a directory; pass the folder that holds the run directories')
    found, seen = [], set()
    # Linked folders are followed (a set of runs gathered with links), each real folder once (no link loops).
    for dirpath, dirnames, files in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        if 'config.json' in files:
            found.append(dirpath)
    found.sort()
    if not found:
        raise ResultsError(
            f'{root} holds no run directories (no config.json below it); pass the folder a sweep wrote (its --runs-dir)'
        )
    return found


def load_run(run_dir, variants=()):
    """A run's record. `variants`: agent settings that tell runs of one agent apart; a run whose agent
    has them is labelled e.g. 'fav[prior_score=clipped]', one whose agent lacks them keeps its name."""
    config_path, final_path = os.path.join(run_dir, 'config.json'), os.path.join(run_dir, 'final.json')
    config = _read_json(config_path)
    # Checked first: a damaged or hand-edited value ({"seed": 1.5}, {"agent_config": null}) was read as another
    # seed, or failed in a traceback far from the file.
    for key, (kind, expected) in CONFIG_TYPES.items():
        value = config.get(key, MISSING)
        if value is not MISSING and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ResultsError(f'{config_path}: {key} is {value!r}, expected {expected}')
    try:
        mode, task = config['mode'], resolve_task(config['task'])  # an alias (a hand-written config) as its full name
        agent, seed, offline_steps = config['agent'], config['seed'], config['offline_steps']
        task_name, family = task.name, task.family.name
        settings = config.get('agent_config', {})
        options = {k: v for k, v in config.items() if k not in NOT_OPTIONS}
        values = [(field, _setting(settings, options, field)) for field in variants]
        shown = [f'{field}={_setting_text(value)}' for field, value in values if value is not MISSING]
        if shown:
            agent += f'[{"; ".join(shown)}]'
    except (KeyError, TypeError, ValueError, AttributeError, UnknownTaskError) as e:
        raise ResultsError(f'{config_path} is not a run config ({e!r}); expected mode, task, agent, seed') from None
    if mode not in SCORE_KEYS:
        raise ResultsError(f'{config_path}: mode {mode!r} is not one of {", ".join(SCORE_KEYS)}')
    final = _read_json(final_path) if os.path.exists(final_path) else None
    if final is not None:
        for key in SCORE_KEYS[mode]:
            value = final.get(key, 'absent')
            number = not isinstance(value, bool) and isinstance(value, int | float)
            if value is not None and not (number and 0 <= value <= 100):  # NaN fails the range too
                raise ResultsError(f'{final_path}: {key} is {value!r}, expected a number in 0..100 (or null)')
    stopped = final is None and os.path.exists(os.path.join(run_dir, STOPPED_NAME))
    origin, online_steps = config.get('dataset_origin'), config.get('online_steps')
    return Run(
        run_dir,
        mode,
        task_name,
        family,
        agent,
        seed,
        offline_steps,
        final,
        settings,
        origin,
        stopped,
        online_steps,
        options,
    )


def _setting_text(value):
    return 'x'.join(map(str, value)) if isinstance(value, list) else str(value)  # hidden_dims=256x256x256


def load_runs(root, variants=()):
    """Every run under `root`. Two runs of one agent, task and seed are refused (they would share a
    cell) unless `variants` tells them apart; so are the runs of one column of different lengths, and the
    seeds of one cell with different settings."""
    variants = list(dict.fromkeys(variants))  # --variant beta --variant beta: one split, not 'fav[beta=1.0; beta=1.0]'
    runs = [load_run(d, variants) for d in find_run_dirs(root)]
    for field in variants:
        if field in NOT_OPTIONS and all(field not in r.settings for r in runs):
            raise ResultsError(
                f'--variant {field}: {field} names a run, or does not change its numbers, so it splits no column; '
                'give a field of its agent_config or another of config.json (e.g. balanced_sampling)'
            )
        if all(r.setting(field) is MISSING for r in runs):
            raise ResultsError(
                f'no run under {root} has the setting {field!r} (--variant takes a field of config.json or of '
                'its agent_config)'
            )
    seen = {}
    for run in runs:
        other = seen.setdefault((run.mode, run.task, run.agent, run.seed), run)
        if other is not run:
            differ = _differences(other, run)
            what = f'{other.path} and {run.path} are both {run.agent} seed {run.seed} on {run.task}'
            if differ:
                field = differ[0][0]
                raise ResultsError(f'{what}; they differ in {field}: tell them apart with --variant {field}')
            raise ResultsError(f'{what} with the same settings; pass a folder that holds only one of them')
    first_of_column = {}
    for run in runs:  # one column's numbers must come from runs of one length (not a smoke test and full runs)
        other = first_of_column.setdefault((run.mode, run.agent), run)
        if _length_text(other) != _length_text(run):
            raise ResultsError(
                f'{other.path} ({_length_text(other)} steps) and {run.path} ({_length_text(run)}) are {run.agent} '
                f'{run.mode} runs of different lengths, which one column would average; pass a folder that holds one, '
                'or split them with --variant offline_steps (or online_steps)'
            )
    first_in_cell = {}
    for run in runs:  # a cell averages its seeds: they may differ in nothing else that can change the numbers
        other = first_in_cell.setdefault((run.mode, run.task, run.agent), run)
        differ = _differences(other, run)
        if differ:
            shown = ', '.join(_difference_text(other, run, d) for d in differ[:3])
            shown += f' and {len(differ) - 3} more' if len(differ) > 3 else ''
            raise ResultsError(
                f'{other.path} and {run.path} are {run.agent} {run.mode} runs on {run.task} with different settings '
                f'({shown}), which one cell would average; compare them as columns with --variant {differ[0][0]}, '
                'or pass a folder that holds runs of one setting'
            )
    return runs


def _differences(run, other):
    """(field, run's value, other's value) for each setting that may change the numbers and differs between two
    runs, agent settings first; `field` is what --variant takes."""
    fields = sorted(run.settings.keys() | other.settings.keys())
    fields += sorted((run.options.keys() | other.options.keys()) - set(fields))
    return [(k, run.setting(k), other.setting(k)) for k in fields if run.setting(k) != other.setting(k)]


def _difference_text(run, other, difference):
    """'agent.beta=1.0 vs 3.0': agent settings named as on the command line (--agent.beta)."""
    field, value, other_value = difference
    name = f'agent.{field}' if field in run.settings or field in other.settings else field
    return f'{name}={_value_text(value)} vs {_value_text(other_value)}'


def _value_text(value):
    return 'unset' if value is MISSING else _setting_text(value)


def _length_text(run):
    return f'{run.offline_steps} offline' + (f' + {run.online_steps} online' if run.mode == 'o2o' else '')


def read_curve(run):
    """(steps, success in 0..100) of a run's evaluations so far; empty if it has none yet."""
    path = os.path.join(run.path, 'eval.csv')
    if not os.path.exists(path):
        return np.zeros(0, int), np.zeros(0)
    try:  # a folder, or bytes that are not text, was blamed on --out or ended in a traceback
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ResultsError(
            f'{path} is not a readable evaluation log ({e}); expected step and success columns'
        ) from None
    try:
        steps, success = np.array([int(r['step']) for r in rows]), np.array([float(r['success']) for r in rows])
    except (KeyError, ValueError, TypeError) as e:  # TypeError: a row cut short (float(None))
        raise ResultsError(f'{path} is not an evaluation log ({e!r}); expected step and success columns') from None
    outside = ~((success >= 0) & (success <= 1))  # NaN too: it was drawn as a gap, -3 as -300 %
    if outside.any():
        i = int(np.argmax(outside))
        raise ResultsError(f'{path}: success at step {steps[i]} is {float(success[i])}, expected a rate in 0..1')
    return steps, 100 * success


# ---------------------------------------------------------------------------------------------------
# Aggregates


@dataclasses.dataclass(frozen=True)
class Score:
    """A mean over tasks of per-task means, with the std over seeds (None with fewer than 2 seeds)."""

    mean: float | None  # None: no finished run
    std: float | None
    tasks: int  # tasks with at least one finished run
    of_tasks: int  # tasks the row stands for
    missing: int  # runs missing or unfinished in those tasks
    covered: tuple = ()  # the tasks with a finished run: only means over the same tasks are compared


def aggregate(scores, tasks, expected):
    """`scores`: task → {seed: score} of finished runs; `expected`: task → the seeds it should have.
    The mean is the mean of the task means over the tasks that have runs; the std is over the seeds
    finished on all of them, of the per-seed mean over those tasks (one task: the std over its seeds)."""
    present = [t for t in tasks if scores.get(t)]
    missing = sum(len(set(expected.get(t, ())) - set(scores.get(t, {}))) for t in tasks)
    if not present:
        return Score(None, None, 0, len(tasks), missing)
    mean = float(np.mean([np.mean(list(scores[t].values())) for t in present]))
    common = sorted(set.intersection(*(set(scores[t]) for t in present)))
    per_seed = [np.mean([scores[t][s] for t in present]) for s in common]
    std = float(np.std(per_seed)) if len(per_seed) >= 2 else None
    return Score(mean, std, len(present), len(tasks), missing, tuple(present))


class ModeResults:
    """The runs of one mode (offline or o2o), indexed for the tables."""

    def __init__(self, mode, runs):
        self.mode = mode
        self.runs = [r for r in runs if r.mode == mode]
        self.agents = sorted({r.agent for r in self.runs}, key=_agent_order)
        self.tasks = sorted({r.task for r in self.runs}, key=TASK_ORDER.get)
        # The suite average, rliable and the summary are over the mode's suite; others only get rows.
        self.suite_tasks = [t for t in self.tasks if t in SUITES[mode]]
        self.task_family = {r.task: r.family for r in self.runs}
        self.families = list(dict.fromkeys(self.task_family[t] for t in self.tasks))
        self.family_tasks = {
            f: [t for t in SUITES['offline'] if resolve_task(t).family.name == f] for f in self.families
        }
        # The seeds an agent was run with anywhere in this mode: what each task that was run (by any
        # agent) should have. Tasks nobody ran are not "missing": the rows say k/n tasks instead.
        self.expected_seeds = {a: sorted({r.seed for r in self.runs if r.agent == a}) for a in self.agents}

    def scores(self, agent, key):
        """task → {seed: score} over the finished runs of `agent` that have a `key` score."""
        out = {}
        for r in self.runs:
            if r.agent == agent and r.score(key) is not None:
                out.setdefault(r.task, {})[r.seed] = float(r.score(key))
        return out

    def cell(self, agent, tasks):
        """One Score per score key of the mode (offline: one; o2o: offline, online)."""
        expected = {t: self.expected_seeds[agent] for t in tasks if t in self.tasks}
        return tuple(aggregate(self.scores(agent, k), tasks, expected) for k in SCORE_KEYS[self.mode])

    def missing_runs(self):
        return sum(self.cell(a, self.tasks)[-1].missing for a in self.agents)

    def unofficial_data(self, tasks):
        """origin → count of the finished runs on `tasks` whose data is not the official datasets."""
        counts = {}
        for r in self.runs:
            if r.final is not None and r.task in tasks and r.dataset_origin not in (None, 'official'):
                counts[r.dataset_origin] = counts.get(r.dataset_origin, 0) + 1
        return counts

    def mixed_settings(self):
        """(environment, agent, {field: 'agent.beta=1.0 vs 3.0'}) where an agent's tasks of one environment were
        run with different settings: its environment row averages them (the data's origin is marked apart, by †)."""
        first, mixed = {}, {}
        for run in self.runs:
            other = first.setdefault((run.family, run.agent), run)
            for difference in _differences(other, run):
                if difference[0] != 'dataset_origin':
                    texts = mixed.setdefault((run.family, run.agent), {})
                    texts.setdefault(difference[0], _difference_text(other, run, difference))
        return [(family, agent, texts) for (family, agent), texts in mixed.items()]

    def runs_of(self, task, agent):
        return [r for r in self.runs if r.task == task and r.agent == agent]


def _agent_order(label):
    known, base = list(DISPLAY_NAMES), base_agent(label)
    return (known.index(base), label) if base in known else (len(known), label)


def results_by_mode(runs):
    return {mode: ModeResults(mode, runs) for mode in SCORE_KEYS if any(r.mode == mode for r in runs)}
