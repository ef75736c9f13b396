"""The benchmark tables and figures from run directories.

python launch/tables.py runs --out results [--published]

Writes, per mode present (offline, o2o): `<mode>.md` and `<mode>.tex` (per-task, per-environment and
suite-average tables, mean ± std over seeds, one column per agent; O2O cells read "offline → online"),
and with the `tables` extra (rliable, matplotlib) `<mode>_rliable.md/.tex` (IQM and mean with 95 %
stratified-bootstrap CIs, probability of improvement of FAV over each other agent) and the figures
(launch/figures.py).
"""

import contextlib
import dataclasses
import os
import pathlib
import shutil
import sys
import tempfile

# Run as a script, Python puts launch/ on the path; the project's packages live one level up.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from launch.stops import record_stops  # noqa: E402

if __name__ == '__main__':  # not when imported: the importer's own Ctrl-C stays as it was
    record_stops()  # a Ctrl-C during the imports below ends the command once they are done, in one line

from envs.registry import SUITES  # noqa: E402
from launch.command_line import CommandLineParser, UserError, check_folder, stop_on_ctrl_c  # noqa: E402
from launch.results import ResultsError, base_agent, display_name, load_runs, results_by_mode  # noqa: E402
from launch.run_logs import STOPPED_NAME  # noqa: E402

# The list of files a run wrote into --out: the next run into the same --out removes those it does not
# write again (a mode, agent or task the runs no longer have), and never touches anything else there.
OUTPUTS_LIST = '.tables-outputs.txt'

# The paper's headline suite averages (0-100), for `--published`: offline over its 56 tasks, O2O over
# its 30 tasks as (offline, online).
PUBLISHED = {
    'offline': {
        'fav': (54,),
        'fql': (48,),
        'qam': (45,),
        'dsrl': (40,),
        'ifql': (34,),
        'cac': (26,),
        'srpo': (20,),
        'fawac': (19,),
    },
    'o2o': {
        'fav': (32, 69),
        'fql': (26, 54),
        'rlpd': (0, 44),
        'qam': (32, 41),
        'rebrac': (16, 39),
        'ifql': (21, 36),
        'iql': (6, 7),
    },
}
# How the notes name a run's `dataset_origin` (config.json) other than 'official'.
DATA_ORIGINS = {
    'generated': 'a small generated dataset (--dataset-episodes)',
    'regenerated': "a full-size dataset generated locally by OGBench's recipe (the official file was missing)",
    'given': 'a dataset file given with --dataset',
    'minari': "Minari's re-collected D4RL AntMaze data, not the paper's D4RL files",
}
PUBLISHED_NAMES = {'qam': 'QAM', 'dsrl': 'DSRL', 'cac': 'CAC', 'srpo': 'SRPO', 'fawac': 'FAWAC'}


@dataclasses.dataclass
class Table:
    """Rows of cells; a cell is text or a tuple of Scores (one per score key of the mode)."""

    title: str
    header: list
    rows: list
    notes: list


# ---------------------------------------------------------------------------------------------------
# Building the tables


def _score_text(score, latex):
    if score.mean is None:
        return r'\mbox{--}' if latex else '—'
    pm = r' \pm ' if latex else ' ± '
    return f'{score.mean:.1f}' + ('' if score.std is None else f'{pm}{score.std:.1f}')


def _cell_text(cell, latex, bold):
    if isinstance(cell, str):
        return _latex_text(cell) if latex else cell
    arrow = r' \rightarrow ' if latex else ' → '
    text = arrow.join(_score_text(s, latex) for s in cell)
    main = cell[-1]
    if bold:
        text = rf'\mathbf{{{text}}}' if latex else f'**{text}**'
    if latex:
        text = f'${text}$'
    if main.of_tasks > 1 and main.tasks < main.of_tasks:
        text += f' ({main.tasks}/{main.of_tasks} tasks)'
    if main.missing:
        text += r'$^*$' if latex else '*'
    return text


def _best(row):
    """Indices of the cells with the highest main score, bolded as in the paper's tables (all of them on a
    tie); none where the means cover different tasks, which are not comparable."""
    scores = {i: c[-1] for i, c in enumerate(row) if not isinstance(c, str) and c[-1].mean is not None}
    if len(scores) < 2 or len({s.covered for s in scores.values()}) > 1:
        return set()
    top = max(s.mean for s in scores.values())
    return {i for i, s in scores.items() if s.mean == top}


def _notes(results):
    score = 'offline → online score' if results.mode == 'o2o' else 'score'
    notes = [
        f'Mean ± std over seeds (population std) of the {score} (0-100, mean success of the last 3 evaluations). '
        'Environment and suite rows: mean of the task means over the tasks that have finished runs '
        '(shown as k/n tasks when some have none); ± over the seeds finished on all of them, of the per-seed '
        'mean. No ± with fewer than 2 such seeds. Bold: best per row, where the means cover the same tasks.'
    ]
    seeds = '; '.join(f'{display_name(a)} {_seed_text(s)}' for a, s in results.expected_seeds.items())
    missing = results.missing_runs()
    notes.append(
        f'— : no finished run. * : {missing} run(s) missing or unfinished in all '
        f'(seeds expected per task: {seeds}); they are left out of the means, never counted as 0.'
        if missing
        else f'All runs finished (seeds per task: {seeds}).'
    )
    stopped = sum(r.stopped for r in results.runs)
    if stopped:
        notes.append(
            f'Of the runs missing or unfinished, {stopped} stopped on non-finite values ({STOPPED_NAME} in their '
            'directories says where).'
        )
    outside = [t for t in results.tasks if t not in results.suite_tasks]
    if outside:
        notes.append(
            f'{len(outside)} task(s) with runs are not in the {results.mode} suite ({", ".join(outside)}): they have '
            'rows of their own but are left out of the suite average.'
        )
    for family, agent, differences in results.mixed_settings():
        fields = sorted(differences, key=lambda field: not differences[field].startswith('agent.'))
        notes.append(
            f"{family}: {display_name(agent)}'s tasks were run with different settings "
            f'({", ".join(differences[f] for f in fields)}); its row averages them (--variant {fields[0]} '
            'splits them into columns).'
        )
    unofficial = results.unofficial_data(results.tasks)
    if unofficial:
        counts = ', '.join(f'{n} on {DATA_ORIGINS.get(origin, origin)}' for origin, n in sorted(unofficial.items()))
        notes.append(
            f'† : rows with finished runs trained on data other than the official datasets ({counts}): '
            "their scores are not comparable with the paper's."
        )
    return notes


def _seed_text(seeds):
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f'{seeds[0]}-{seeds[-1]}'
    return ','.join(map(str, seeds))  # as --seeds takes them: 0 or 0,3,5


def build_tables(results, published=False):
    agents, names = results.agents, [display_name(a) for a in results.agents]
    notes = _notes(results)

    def dagger(tasks):  # marks a row whose numbers include runs on data other than the official datasets
        return ' †' if results.unofficial_data(tasks) else ''

    task_rows = [
        [results.task_family[t], t.rsplit('-singletask-', 1)[-1].removesuffix('-v0') + dagger([t])]
        + [results.cell(a, [t]) for a in agents]
        for t in results.tasks
    ]
    family_rows = [
        [f + dagger(results.family_tasks[f])] + [results.cell(a, results.family_tasks[f]) for a in agents]
        for f in results.families
    ]
    suite = SUITES[results.mode]
    suite_row = [f'average over tasks with runs (the suite has {len(suite)}){dagger(results.suite_tasks)}'] + [
        _suite_cell(results, a, len(suite)) for a in agents
    ]
    suite_header, suite_rows = ['', *names], [suite_row]
    if published:
        extra = [a for a in PUBLISHED[results.mode] if a not in {base_agent(label) for label in agents}]
        suite_header += [PUBLISHED_NAMES.get(a, display_name(a)) for a in extra]
        suite_row += ['not run'] * len(extra)
        suite_rows.append(
            [f'published in the FAV paper ({len(suite)} tasks; not measured here)']
            + [_published_text(results.mode, a) for a in agents + extra]
        )
    return [
        Table(f'{results.mode}: per task', ['environment', 'task', *names], task_rows, notes),
        Table(f'{results.mode}: per environment', ['environment', *names], family_rows, notes),
        Table(f'{results.mode}: suite average', suite_header, suite_rows, notes),
    ]


def _suite_cell(results, agent, suite_size):
    return tuple(dataclasses.replace(s, of_tasks=suite_size) for s in results.cell(agent, results.suite_tasks))


def _published_text(mode, label):
    numbers = PUBLISHED[mode].get(base_agent(label))  # a variant column shows its agent's published numbers
    return 'not published' if numbers is None else ' → '.join(str(n) for n in numbers)


# ---------------------------------------------------------------------------------------------------
# Rendering


def to_markdown(tables):
    out = []
    for table in tables:
        out += [f'### {table.title}', '', '| ' + ' | '.join(table.header) + ' |']
        out.append('|' + '---|' * len(table.header))
        for row in table.rows:
            best = _best(row)
            out.append('| ' + ' | '.join(_cell_text(c, False, i in best) for i, c in enumerate(row)) + ' |')
        out += [''] + [f'{n}  ' for n in table.notes] + ['']
    return '\n'.join(out)


def to_latex(tables):
    out = []
    for table in tables:
        columns = ''.join('l' if isinstance(c, str) else 'c' for c in table.rows[0])
        out += [f'% {table.title}', rf'\begin{{tabular}}{{{columns}}}', r'\toprule']
        out.append(' & '.join(_cell_text(h, True, False) for h in table.header) + r' \\')
        out.append(r'\midrule')
        for row in table.rows:
            best = _best(row)
            out.append(' & '.join(_cell_text(c, True, i in best) for i, c in enumerate(row)) + r' \\')
        out += [r'\bottomrule', r'\end{tabular}', '']
        out += [_latex_text(n) + r'\par' for n in table.notes] + ['']
    return '\n'.join(out)


_LATEX_ESCAPES = {
    '\\': r'\textbackslash{}',
    '{': r'\{',
    '}': r'\}',
    '%': r'\%',
    '&': r'\&',
    '#': r'\#',
    '$': r'\$',
    '_': r'\_',
    '~': r'\textasciitilde{}',
    '^': r'\textasciicircum{}',
    '<': '$<$',
    '>': '$>$',
    '±': r'$\pm$',
    '→': r'$\rightarrow$',
    '—': '--',
    '*': r'$^*$',
    '†': r'$^\dagger$',
}


def _latex_text(text):
    return ''.join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def aggregate_table(aggregates):
    """The rliable numbers of one mode as a Table (text cells)."""
    mode, agents, runs = aggregates.mode, list(aggregates.estimates), aggregates.runs
    reference_runs = runs.get(aggregates.reference, 0)
    rows = [
        [display_name(a), str(runs[a])]
        + [_estimate_text(aggregates.estimates[a][m], runs[a]) for m in ('IQM', 'Mean')]
        + (
            [
                _estimate_text(aggregates.improvement[a], min(runs[a], reference_runs), digits=2)
                if a in aggregates.improvement
                else ''
            ]
            if aggregates.reference
            else []  # without FAV, no agent is compared with the others: no P column
        )
        for a in agents
    ]
    score = 'online score' if mode == 'o2o' else 'score'
    better = f'P({display_name(aggregates.reference)} > X)' if aggregates.reference else None
    notes = [
        f'rliable over the {len(aggregates.tasks)} task(s) on which every agent has a finished run, '
        f'{score} 0-100; [95 % stratified-bootstrap CI].'
        + (f' {better}: probability of improvement.' if better else '')
    ]
    if aggregates.left_out:
        names = ', '.join(display_name(a) for a in aggregates.left_out)
        notes.append(f"Left out: {names}, with no finished run on the suite's tasks yet.")
    if min(runs.values(), default=2) < 2:
        notes.append(
            'No CI for an agent with 1 run per task (for P, where either agent has 1): the stratified bootstrap '
            'resamples the runs within each task, so its interval would be the point alone, not a measure of '
            'uncertainty.'
        )
    header = ['agent', 'runs per task', 'IQM', 'Mean'] + ([better] if better else [])
    return Table(f'{mode}: rliable aggregates', header, rows, notes)


def _estimate_text(estimate, runs, digits=1):
    point, low, high = estimate
    if runs < 2:
        return f'{point:.{digits}f}'
    return f'{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]'


# ---------------------------------------------------------------------------------------------------
# Command line


def write_text(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def made_by_the_extra(name):
    """Whether output `name` comes from the `tables` extra (rliable aggregates, figures), not the plain tables."""
    return name.endswith('.png') or '_rliable.' in os.path.basename(name)


def write_all(runs_dir, out, published=False, reps=10_000, variants=()):
    """Reads the runs, writes every table and figure; returns the paths written, the suite-average tables in
    Markdown, and whether the `tables` extra made its part. `variants`: agent settings whose values split an
    agent into columns."""
    by_mode = results_by_mode(load_runs(runs_dir, variants))
    written, summary = [], []
    for mode, results in by_mode.items():
        tables = build_tables(results, published)
        written.append(write_text(os.path.join(out, f'{mode}.md'), to_markdown(tables)))
        written.append(write_text(os.path.join(out, f'{mode}.tex'), to_latex(tables)))
        summary.append(to_markdown(tables[-1:]))
    try:
        from launch import aggregates, figures  # the `tables` extra: rliable, matplotlib
    except ImportError as e:
        print(f'rliable aggregates and figures skipped: {e.name} is missing (pip install -e ".[tables]")')
        return written, summary, False
    for mode, results in by_mode.items():
        found = aggregates.compute(results, reps)
        if found.tasks:
            table = [aggregate_table(found)]
            written.append(write_text(os.path.join(out, f'{mode}_rliable.md'), to_markdown(table)))
            written.append(write_text(os.path.join(out, f'{mode}_rliable.tex'), to_latex(table)))
            written.append(figures.interval_plot(found, os.path.join(out, f'{mode}_intervals.png')))
            if found.improvement:
                written.append(figures.improvement_plot(found, os.path.join(out, f'{mode}_improvement.png')))
        elif results.suite_tasks:
            print(f'{mode}: no rliable aggregates: no task of the suite has finished runs of every agent that has any')
        else:
            print(f'{mode}: no rliable aggregates or suite average: no run is on a task of the {mode} suite')
        for task in results.tasks:
            written.append(figures.training_curves(results, task, os.path.join(out, 'curves', mode, f'{task}.png')))
    written.append(figures.summary_bars(by_mode, os.path.join(out, 'summary.png'), PUBLISHED if published else None))
    return written, summary, True


def _earlier_outputs(out):
    """The files the last run wrote into `out` (its OUTPUTS_LIST), relative to it; none are anyone else's."""
    try:
        with open(os.path.join(out, OUTPUTS_LIST)) as f:
            names = [line.strip() for line in f if line.strip()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [n for n in names if not os.path.isabs(n) and '..' not in n.split(os.sep)]


class OutputError(Exception):
    """--out cannot take the outputs: one line, exit code 2, nothing replaced."""


def _check_destinations(out, names, stale, staging):
    """Refuses, before anything is moved, outputs that could not all be moved in (a folder where a file goes, a
    file where a folder goes, a folder this cannot write in or on another file system: a link inside --out), so
    a failure never leaves --out half replaced. `stale`: earlier outputs that will be removed."""
    device, folders = os.stat(staging).st_dev, set()
    for name in names:
        target = os.path.join(out, name)
        if os.path.isdir(target):
            raise OutputError(f'{target} is a folder, where a file goes')
        folder = os.path.dirname(target)
        while not os.path.lexists(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            raise OutputError(f'{folder} is not a folder, and {target} goes in it')
        if os.stat(folder).st_dev != device:
            raise OutputError(f'{folder} is on another file system than {out} (a link?): its files cannot be moved in')
        folders.add(folder)
    folders |= {os.path.dirname(os.path.join(out, n)) for n in stale if os.path.lexists(os.path.join(out, n))}
    for folder in sorted(folders):
        try:  # os.access would not do: it says yes to root even where writing fails
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise OutputError(f'cannot write in {folder} ({e.strerror})') from None


def main(argv=None):
    p = CommandLineParser(prog='launch/tables.py', description=__doc__.split('\n\n')[0])
    p.add_argument('runs_dir', help='folder holding run directories (any depth), e.g. runs/')
    p.add_argument('--out', default='results', help='where the tables and figures go (default: results/)')
    p.add_argument(
        '--published', action='store_true', help="add the paper's published suite averages as a row of their own"
    )
    p.add_argument('--reps', type=int, default=10_000, help='bootstrap replicates of the rliable CIs (default: 10000)')
    p.add_argument(
        '--variant',
        action='append',
        default=[],
        metavar='FIELD',
        help="a setting (a field of config.json's agent_config, or of config.json: balanced_sampling, ...) whose "
        'values split an agent into columns of their own, e.g. --variant prior_score; repeatable',
    )
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f'--reps must be >= 1, got {args.reps}')
    try:  # '' (the working directory, unasked), a file in the way, a link to nothing: refused
        check_folder('--out', args.out)
        # A link to another file system is followed, so that the tables are written beside where they go.
        out = os.path.realpath(os.path.expanduser(args.out))
        nearest = check_folder('--out', out)  # --out's real folder, or its nearest folder that exists
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    # Written in a scratch folder in `nearest` (results/ may not exist, for --out results/prior), and moved in at
    # the end, making the folders on the way: an error leaves everything as it was. On the file system of --out
    # itself (a link to /dev/shm, a mount point), the moves are renames.
    try:
        staging = tempfile.mkdtemp(prefix='.tables-scratch-', dir=nearest)
    except OSError as e:
        print(f'error: --out {args.out}: cannot write in {nearest} ({e.strerror}); pass another --out', file=sys.stderr)
        return 2
    try:
        written, summary, extra_made = write_all(args.runs_dir, staging, args.published, args.reps, args.variant)
        names = [os.path.relpath(path, staging) for path in written]
        # An earlier run's tables of a mode, agent or task these runs no longer have; a folder there is not ours.
        stale = [n for n in sorted(set(_earlier_outputs(out)) - set(names)) if not os.path.isdir(os.path.join(out, n))]
        # Without the extra, its earlier figures and aggregates stay (nothing here could make them again), listed
        # as outputs still, so that a run with the extra replaces or removes them.
        kept = [] if extra_made else [n for n in stale if made_by_the_extra(n)]
        stale = [n for n in stale if n not in kept]
        write_text(os.path.join(staging, OUTPUTS_LIST), '\n'.join([*names, *kept]) + '\n')
        _check_destinations(out, [*names, OUTPUTS_LIST], stale, staging)  # all are replaced, or none
        for name in [*names, OUTPUTS_LIST]:
            target = os.path.join(out, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(staging, name), target)
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out, name))
            folder = os.path.dirname(name)
            while folder:  # a folder it leaves empty (curves/o2o/ of runs no longer there) goes too
                try:
                    os.rmdir(os.path.join(out, folder))
                except OSError:  # not empty (a file of the user's, or still ours), or gone already
                    break
                folder = os.path.dirname(folder)
    except ResultsError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except OutputError as e:
        print(f'error: --out {args.out}: {e}; pass another --out', file=sys.stderr)
        return 2
    except (NotADirectoryError, FileExistsError, IsADirectoryError, PermissionError) as e:
        print(f'error: --out {args.out}: {e.filename}: {e.strerror}; pass another --out', file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print('\n'.join(summary))
    print(f'wrote {len(written)} files to {args.out}')
    if stale:
        print(f'removed {len(stale)} file(s) an earlier run wrote there that this one did not: {", ".join(stale)}')
    if kept:
        print(f'kept {len(kept)} figure and rliable file(s) of an earlier run, not updated: {", ".join(kept)}')
    return 0


if __name__ == '__main__':
    sys.exit(stop_on_ctrl_c(main))
