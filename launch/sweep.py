"""Every (agent, task, seed) of a suite, as jobs on a Ray cluster (or one after another without Ray).

python launch/sweep.py --suite offline56 --agent fav --agent fql --seeds 0-7 [--runs-dir runs] [--address ADDR]

A job runs the CLI (launch/offline.py or launch/o2o.py) in a subprocess: by default the seeds of one
task and agent as one stacked group (`--group seeds`), or the 5 tasks of a family too (`--group
family`), or each run alone (`--group none`). Every run has its directory
<runs-dir>/<mode>/<task>/<agent>/seed<seed>, so a killed job resumes from its runs' checkpoints when
the sweep is rerun, and a finished run is never redone. Settings the sweep does not know (e.g.
`--offline-steps 300 --agent.hidden_dims=64,64`) are passed to every run (--offline-steps not to RLPD's,
which have no offline phase).
"""

import ctypes
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

# Run as a script, Python puts launch/ on the path; the project's packages live one level up.
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.stops import record_stops, stop_recording  # noqa: E402

if __name__ == '__main__':  # not when imported: the importer's own Ctrl-C stays as it was
    record_stops()  # a Ctrl-C during the imports below (JAX's, with the agents) is raised once they are done

from tqdm import tqdm  # noqa: E402

from agents import AGENTS  # noqa: E402
from datasets.ogbench_data import DatasetError, given_dataset_path  # noqa: E402
from envs.registry import UnknownTaskError, resolve_task  # noqa: E402
from launch.command_line import (  # noqa: E402
    CommandLineParser,
    UserError,
    check_folder,
    check_writable_folder,
    print_to_a_pipe,
)
from launch.run_logs import STOPPED_NAME, RunFileError  # noqa: E402
from launch.settings import agent_config  # noqa: E402
from launch.stops import how_it_stopped, raise_if_stopped, stops_raised, take_back_stop_signals  # noqa: E402
from launch.sweep_plan import (  # noqa: E402
    GROUPINGS,
    check_started_runs,
    data_preparations,
    gpu_hours,
    parse_passed_settings,
    plan,
)

# Ray's bounds on resource quantities (ray_constants): a share of a CPU or GPU below this is refused, and a
# cluster of more CPUs than that. Checked here, before a cluster starts, rather than in a traceback from Ray.
RAY_SMALLEST_SHARE = 0.0001
RAY_LARGEST_QUANTITY = 100e12

# ---------------------------------------------------------------------------------------------------
# Running


def _die_with_parent():
    """The run gets SIGKILL when its parent (the sweep, or a Ray worker) dies instead of training on
    unseen (Linux). Until then, its run lock refuses a second trainer of the same run."""
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_command(arguments, log_path, *after):
    """Runs `python ARGUMENTS` in the repository with its output in `log_path`; returns (exit code, last
    line of the log). `after`: results of the data preparations it waits on (Ray waits on them); if one
    failed, the job does not run and reports that failure."""
    for code, last in after:
        if code != 0:
            return code, f'its data preparation failed: {last}'
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, 'ab') as log:
        code = subprocess.run(
            [sys.executable, *arguments], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        ).returncode
    with open(log_path, errors='replace') as log:
        lines = [line.strip() for line in log if line.strip()]
    return code, lines[-1] if lines else ''


def log_path(job):
    """Job output beside the run directories, outside them: <runs-dir>/logs/<job name>.log"""
    return os.path.join(job.runs_dir, 'logs', job.name + '.log')


class Progress:
    """tqdm bar over the jobs to run, with done / running / queued / failed counts and tqdm's ETA."""

    def __init__(self, total, enabled, slots=1):
        # The bar is redrawn as the wait for jobs polls, once a second: into a log file (a sweep under nohup) that
        # is a line a second for days, so there it is redrawn at most once a minute.
        refresh_s = 0.1 if sys.stderr.isatty() else 60
        self.bar = tqdm(
            total=total, desc='sweep', unit='job', disable=not enabled, dynamic_ncols=True, mininterval=refresh_s
        )
        self.slots = slots  # jobs the cluster runs at once; the others wait for resources
        self.pending = self.failed = self.done = 0  # counted here: a disabled tqdm counts nothing
        self.counts = {}

    def update(self, done=0, pending=None, failed=0):
        self.pending = self.pending if pending is None else pending
        self.failed += failed
        self.done += done
        running = min(self.pending, self.slots)
        self.counts = dict(done=self.done, running=running, queued=self.pending - running, failed=self.failed)
        self.bar.set_postfix(self.counts, refresh=False)
        self.bar.update(done)

    def close(self):
        self.bar.close()


def run_jobs_with_ray(jobs, preparations, args, runs_dir):
    import ray

    if args.address:
        _check_listening(args.address)
        try:
            ray.init(address=args.address, logging_level='WARNING', log_to_driver=False)
        except ConnectionError as e:  # 'auto' with no cluster running: at once, in many lines
            raise UserError(_no_cluster(args.address, str(e).splitlines()[0])) from None
    else:
        ray.init(num_cpus=args.local_cpus, logging_level='WARNING', log_to_driver=False, include_dashboard=False)
    take_back_stop_signals()  # Ray's own SIGTERM handler printed a stack dump and exited with code 1
    resources = ray.cluster_resources()
    gpus = args.gpus_per_job if args.gpus_per_job is not None else (1 if resources.get('GPU') else 0)
    if not args.address and gpus > resources.get('GPU', 0):  # Ray would wait forever for a job's GPUs
        ray.shutdown()
        raise UserError(
            f'the local Ray cluster has {resources.get("GPU", 0):g} GPU(s), so no job can get --gpus-per-job '
            f'{gpus:g}; pass --gpus-per-job 0, or --address of a cluster with GPUs'
        )
    # An unwritable --runs-dir fails here, once, rather than in every job on the cluster's workers.
    os.makedirs(os.path.join(runs_dir, 'logs'), exist_ok=True)
    remote = ray.remote(run_command)
    job_options = dict(num_cpus=args.cpus_per_job, num_gpus=gpus, max_retries=0)
    if 0 < gpus < 1:  # several JAX processes share a GPU: allocate memory as needed, not 75 % each
        job_options['runtime_env'] = {'env_vars': {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}}
    print(
        f'ray: {len(jobs)} job(s) on {resources.get("CPU", 0):g} CPU(s) and {resources.get("GPU", 0):g} GPU(s), '
        f'{args.cpus_per_job:g} CPU(s) and {gpus:g} GPU(s) per job'
    )
    prepared = {
        family: remote.options(num_cpus=args.cpus_per_job).remote(command, _data_log(runs_dir, family))
        for family, command in preparations.items()
    }

    def submit(job):
        after = [prepared[f] for f in {resolve_task(r.task).family.name for r in job.runs} if f in prepared]
        return remote.options(**job_options).remote(job.arguments(), log_path(job), *after)

    pending = {submit(job): job for job in jobs}
    slots = resources.get('CPU', 1) // args.cpus_per_job
    if gpus:
        slots = min(slots, resources.get('GPU', 0) // gpus)
    return _collect(ray, pending, Progress(len(pending), args.progress, max(int(slots), 1)), args, submit)


def _check_listening(address):
    """Refuses a HOST:PORT where nothing listens: ray.init would retry it for minutes, printing warnings.
    'auto' and 'ray://' addresses fail at once in ray.init."""
    host, _, port = address.rpartition(':')
    if '://' in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip('[]'), int(port)), timeout=5).close()
    except (OSError, OverflowError) as e:  # OverflowError: a port too large for a C long
        raise UserError(_no_cluster(address, getattr(e, 'strerror', None) or e)) from None


def _no_cluster(address, reason):
    return (
        f'no Ray cluster at --address {address} ({reason}); start one with `ray start --head`, '
        'or leave out --address for a local one'
    )


def _data_log(runs_dir, family):
    return os.path.join(runs_dir, 'logs', 'data', f'{family}.log')


def _collect(ray, pending, progress, args, submit):
    """Waits for the jobs, resubmitting failures up to --max-retries; returns {job: (exit code, last
    line)} of the jobs that still failed after their retries ({} when all finished)."""
    attempts, failures = {}, {}
    try:
        while pending:
            raise_if_stopped()  # a Ctrl-C Python swallowed (raised in a garbage-collection callback) stops it too
            progress.update(pending=len(pending))
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    code, last = ray.get(ref)
                except ray.exceptions.RayError as e:  # its worker died (out of memory, a lost node): a failed try
                    code, last = 1, f'{type(e).__name__}: {" ".join(str(e).split())[:300]}'
                attempts[job] = attempts.get(job, 0) + 1
                if code != 0 and code != 2 and attempts[job] <= args.max_retries:  # 2: bad settings
                    pending[submit(job)] = job  # it resumes from its checkpoint
                    continue
                if code != 0:
                    failures[job] = (code, last)
                progress.update(done=1, pending=len(pending), failed=int(code != 0))
    finally:
        progress.close()
    return failures


def run_jobs_in_turn(jobs, preparations, args, runs_dir):
    prepared = {family: run_command(command, _data_log(runs_dir, family)) for family, command in preparations.items()}
    progress = Progress(len(jobs), args.progress)
    failures = {}
    try:
        for job in jobs:
            progress.update(pending=len(jobs) - progress.done)
            after = [prepared[f] for f in {resolve_task(r.task).family.name for r in job.runs} if f in prepared]
            for _ in range(args.max_retries + 1):
                raise_if_stopped()  # a Ctrl-C Python swallowed (raised in a garbage-collection callback) stops it too
                code, last = run_command(job.arguments(), log_path(job), *after)
                if code in (0, 2) or any(c for c, _ in after):
                    break
            if code:
                failures[job] = (code, last)
            progress.update(done=1, pending=len(jobs) - progress.done - 1, failed=int(code != 0))
    finally:
        progress.close()
    return failures


# ---------------------------------------------------------------------------------------------------
# Entry point


def build_parser():
    p = CommandLineParser(
        prog='launch/sweep.py',
        allow_abbrev=False,  # '--seed 1' must reach the check below, not be read as '--seeds 1'
        description=__doc__.split('\n\n')[0],
        epilog='Other options (--offline-steps, --eval-every, --agent.FIELD=VALUE, ...) are passed to every run '
        "(--offline-steps not to RLPD's, which have no offline phase).",
    )
    p.add_argument(
        '--suite', required=True, help='offline56, o2o30, an environment (cube-single) or a task; several: A,B'
    )
    p.add_argument('--mode', choices=['offline', 'o2o'], help='default: o2o for --suite o2o30, else offline')
    p.add_argument(
        '--agent',
        action='append',
        choices=[*sorted(AGENTS), 'rlpd'],
        help='repeat for several agents (rlpd: O2O; default: fav)',
    )
    p.add_argument('--seeds', default='0-7', help="'0-7', '0,2,5' or one seed (default: 0-7)")
    p.add_argument(
        '--group',
        choices=GROUPINGS,
        default='seeds',
        help="runs per job, trained as one stacked group: a task's seeds ('seeds'), a family's 5 tasks × seeds "
        "where the suite has all 5 ('family'), or one run ('none') (default: seeds)",
    )
    p.add_argument(
        '--runs-dir',
        default='runs',
        help='root of the runs: <runs-dir>/<mode>/<task>/<agent>/seed<seed> (default: runs)',
    )
    p.add_argument('--address', help="Ray cluster address (e.g. 'auto' or HOST:6379); default: a local cluster")
    p.add_argument('--local-cpus', type=int, help='CPUs of the local Ray cluster (default: all)')
    p.add_argument('--gpus-per-job', type=float, help='GPU share per job (default: 1 if the cluster has GPUs, else 0)')
    p.add_argument(
        '--cpus-per-job',
        type=float,
        default=1.0,
        help='CPUs Ray reserves per job; an O2O group steps its env copies in worker processes (default: 1)',
    )
    p.add_argument(
        '--max-retries',
        type=int,
        default=2,
        help='reruns of a failed job, each resuming from its checkpoint (default: 2)',
    )
    p.add_argument('--dry-run', action='store_true', help='print the jobs and the estimated GPU-hours, run nothing')
    p.add_argument('--no-ray', action='store_true', help='run the jobs one after another even if Ray is installed')
    p.add_argument('--no-progress', dest='progress', action='store_false', help="hide the sweep's progress bar")
    return p


def main(argv=None):
    """SIGTERM (a cluster's scheduler, `kill`) stops the sweep as Ctrl-C does, in one line."""
    with stops_raised():
        try:
            raise_if_stopped()  # a Ctrl-C or SIGTERM that came while the sweep imported JAX
            return _main(argv)
        except KeyboardInterrupt as e:  # the jobs' runs stop too (their group, or with their parent)
            stopped, code = how_it_stopped(e)
            print(
                f'{stopped}: rerun the same command to go on (finished runs are kept, the others resume from their '
                'checkpoints)',
                file=sys.stderr,
            )
            return code


def _main(argv):
    args, passed = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.max_retries < 0:
            raise UserError(f'--max-retries must be >= 0, got {args.max_retries}')
        if not 0 < args.cpus_per_job < math.inf:  # written so that nan is refused too
            raise UserError(f'--cpus-per-job must be > 0 and finite, got {args.cpus_per_job:g}')
        if not 0 <= (args.gpus_per_job or 0) < math.inf:
            raise UserError(f'--gpus-per-job must be >= 0 and finite, got {args.gpus_per_job:g}')
        if not args.runs_dir:  # abspath('') is the working directory: the runs went there, unasked
            raise UserError('--runs-dir is empty: give a folder, or leave --runs-dir out for the default (runs)')
        for flag, share in (('--cpus-per-job', args.cpus_per_job), ('--gpus-per-job', args.gpus_per_job or 0)):
            if 0 < share < RAY_SMALLEST_SHARE:
                raise UserError(f'{flag} {share:g}: Ray takes shares of at least {RAY_SMALLEST_SHARE:g}')
        if (args.local_cpus or 0) > RAY_LARGEST_QUANTITY:
            raise UserError(f'--local-cpus {args.local_cpus}: Ray takes at most {RAY_LARGEST_QUANTITY:.0f} CPUs')
        if args.address == '':  # read as no --address: the jobs ran on this machine, not on the cluster meant
            raise UserError('--address is empty: give auto or HOST:6379, or leave --address out for a local cluster')
        if args.address and args.no_ray:
            raise UserError(f'--address {args.address} asks for a Ray cluster, --no-ray for none: give one of them')
        local_cpus = args.local_cpus if args.local_cpus is not None else os.cpu_count()
        if not args.address and local_cpus < args.cpus_per_job:  # Ray would wait forever for a job's CPUs
            raise UserError(
                f'a local cluster of {local_cpus} CPU(s) cannot give a job --cpus-per-job {args.cpus_per_job}: '
                'pass a smaller --cpus-per-job or a larger --local-cpus'
            )
        runs_dir = os.path.abspath(os.path.expanduser(args.runs_dir))
        # Refused here, not in every job (a dry run writes nothing: a folder it could not write is its reader's)
        (check_folder if args.dry_run else check_writable_folder)('--runs-dir', runs_dir)
        mode, runs, jobs = plan(args, passed)
        cli = parse_passed_settings(mode, passed, runs)
        # What every job of a task would fail on is refused here, not in one failing job per task.
        missing = sorted({c.dataset for c in cli.values() if c.dataset and not os.path.exists(c.dataset)})
        if missing:
            raise UserError(f'--dataset {missing[0]}: no such file or folder')
        for agent, task in dict.fromkeys((r.agent, r.task) for r in runs):
            family = resolve_task(task).family
            agent_config(cli[agent], mode, family)  # e.g. --dataset-episodes where none is made
            if cli[agent].dataset and family.source == 'ogbench':
                given_dataset_path(cli[agent].dataset)  # a folder, or a file without its -val file beside it
        check_started_runs(mode, jobs)
    except (UserError, UnknownTaskError, RunFileError, DatasetError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    todo = [job for job in jobs if not job.finished]
    unfinished = sum(job.unfinished for job in todo)
    stopped = [r for r in runs if r.stopped]
    hours = sum(gpu_hours(mode, cli[job.runs[0].agent], job.unfinished) for job in todo)
    print(
        f'{len(jobs)} job(s) of {len(runs)} {mode} run(s) (--group {args.group}); '
        f'{len(runs) - unfinished - len(stopped)} run(s) already finished, {unfinished} to run in {len(todo)} job(s) '
        f"(about {hours:.2f} GPU-hours on an H100 at FAV's measured rates)"
    )
    if stopped:
        print(
            f'{len(stopped)} run(s) stopped on non-finite values are left alone (delete their {STOPPED_NAME} '
            f'to train them again), e.g. {stopped[0].run_dir}'
        )
    if args.dry_run:
        # The jobs run in the repository; the printed commands name the CLI from the folder the sweep started in.
        commands = [[os.path.relpath(REPO / script), *rest] for script, *rest in (job.arguments() for job in todo)]
        print_to_a_pipe('\n'.join(' '.join(['python', *command]) for command in commands))
        return 0
    if not todo:
        return 0
    preparations = data_preparations([r for job in todo for r in job.runs], next(iter(cli.values())))
    try:
        import ray  # noqa: F401

        use_ray = not args.no_ray
    except ImportError:
        if args.address and not args.no_ray:  # run here, the jobs would ignore the cluster asked for
            print(
                f'error: --address {args.address} needs Ray, which is not installed: pip install -e ".[sweep]" '
                '(or leave out --address to run the jobs here one after another)',
                file=sys.stderr,
            )
            return 2
        use_ray = False
        print(f'ray is not installed: running {len(todo)} job(s) one after another (pip install -e ".[sweep]")')
    if args.no_ray:
        print(f'--no-ray: running {len(todo)} job(s) one after another')
    start = time.time()
    try:
        failures = (run_jobs_with_ray if use_ray else run_jobs_in_turn)(todo, preparations, args, runs_dir)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # the logs' folder
        if e.filename is None:
            raise
        print(f'error: {e.filename}: {e.strerror}; pass a --runs-dir that can be written', file=sys.stderr)
        return 2
    print(f'{len(todo) - len(failures)} of {len(todo)} job(s) finished in {time.time() - start:.0f} s')
    for job, (code, last) in failures.items():
        print(f'failed (exit {code}): {job.name}: {last}  [log: {log_path(job)}]')
    return 1 if failures else 0


if __name__ == '__main__':
    try:
        code = main()
    finally:
        stop_recording()  # Ray shuts down at exit: a Ctrl-C or SIGTERM there ends the process, as anywhere
    sys.exit(code)
