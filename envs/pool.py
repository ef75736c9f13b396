"""Env copies stepped together: in this process, or spread over worker processes (several copies each).

Unlike a gymnasium VectorEnv, each copy can be reset on its own, with its own seed and a replay of
actions (a resumed O2O run puts its env back mid-episode this way), and many copies share a process,
so a group of 40 runs × 10 evaluation copies does not start 400 processes. A copy's results depend only
on its seed and its actions, never on which process steps it.
"""

import multiprocessing
import signal
import sys

import numpy as np


def _step(env, action):
    """One env step → (observation, reward, terminated, truncated, success, episode return, episode length)."""
    observation, reward, terminated, truncated, info = env.step(action)
    episode = info.get('episode', {})
    return (
        observation,
        float(reward),
        bool(terminated),
        bool(truncated),
        float(info.get('success', 0.0)),
        float(episode.get('r', np.nan)),
        float(episode.get('l', np.nan)),
    )


def _reset(env, seed, actions):
    """Resets a copy (seed None: continue its generator), then replays `actions`; → observation."""
    observation, _ = env.reset(seed=seed)
    for action in actions:
        observation = env.step(action)[0]
    return observation


def _serve(envs, command, payload):
    if command == 'step':  # payload: [(copy, action)]
        return [_step(envs[i], a) for i, a in payload]
    return [_reset(envs[i], seed, actions) for i, seed, actions in payload]  # 'reset'


# A healthy env answers a step or a reset (its replay included) in seconds; no answer in this long is worth a word.
SILENT_WORKER_S = 600


class EnvWorkerError(RuntimeError):
    """An env worker process is gone (killed, or out of memory)."""


def _worker(connection, env_fns):
    # Ctrl-C reaches the whole process group: the parent handles it and closes the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs = [fn() for fn in env_fns]
    try:
        while True:
            command, payload = connection.recv()
            if command == 'close':
                break
            connection.send(_serve(envs, command, payload))
    except (EOFError, BrokenPipeError):  # the parent is gone (killed): nothing to report to
        pass
    finally:
        for env in envs:
            env.close()


class EnvPool:
    """`len(env_fns)` env copies; `workers` processes (0: all in this process)."""

    def __init__(self, env_fns, workers=0):
        self.num_envs = len(env_fns)
        workers = min(workers, self.num_envs)
        self.local = None
        self.connections, self.processes = [], []
        if workers == 0:
            self.local = [fn() for fn in env_fns]
            self.owner = [(0, i) for i in range(self.num_envs)]
            return
        # Contiguous slices of copies per process. 'spawn': forking a process running JAX's threads is unsafe.
        bounds = np.linspace(0, self.num_envs, workers + 1).astype(int)
        context = multiprocessing.get_context('spawn')
        self.owner = []
        for w, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, env_fns[lo:hi]), daemon=True)
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)
            self.owner += [(w, i) for i in range(hi - lo)]

    def _call(self, command, items):
        """items: [(copy, *args)] → results in the same order."""
        if self.local is not None:
            return _serve(self.local, command, [(i, *rest) for i, *rest in items])
        per_worker = {}
        for position, (copy, *rest) in enumerate(items):
            worker, local = self.owner[copy]
            per_worker.setdefault(worker, []).append((position, (local, *rest)))
        results = [None] * len(items)
        try:
            for worker, entries in per_worker.items():
                self.connections[worker].send((command, [e for _, e in entries]))
            for worker, entries in per_worker.items():
                for (position, _), result in zip(entries, self._receive(worker), strict=True):
                    results[position] = result
        except (EOFError, BrokenPipeError, ConnectionResetError):
            raise EnvWorkerError('an env worker process exited (killed, or out of memory?)') from None
        return results

    def _receive(self, worker):
        """The worker's answer. One that keeps silent (stopped by SIGSTOP, or stuck) would hang the run without a
        word: after SILENT_WORKER_S this says so, once, and goes on waiting, as a slow env may yet answer."""
        connection = self.connections[worker]
        if not connection.poll(SILENT_WORKER_S):
            pid = self.processes[worker].pid
            print(
                f'note: env worker process {pid} has not answered in {SILENT_WORKER_S:g} s; still waiting (if it was '
                f'stopped, `kill -CONT {pid}` continues it; Ctrl-C stops the run, keeping its last checkpoint)',
                file=sys.stderr,
                flush=True,
            )
        return connection.recv()

    def step(self, actions, copies=None):
        """Steps `copies` (default: all) with their actions; → list of `_step` tuples."""
        copies = range(self.num_envs) if copies is None else copies
        return self._call('step', [(c, actions[k]) for k, c in enumerate(copies)])

    def reset(self, copies, seeds, replays=None):
        """Resets each copy with its seed (None: continue its generator) and replays its actions."""
        replays = replays or [[]] * len(copies)
        return self._call('reset', list(zip(copies, seeds, replays, strict=True)))

    def close(self):
        """Stops every worker, even when some died or a pipe broke (this often runs after an error)."""
        for connection in self.connections:
            try:
                connection.send(('close', None))
            except OSError:  # a dead worker's pipe: it is terminated below
                pass
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():  # stuck, or stopped (SIGSTOP): SIGTERM would wait for a SIGCONT, and exit with it
                process.kill()
                process.join(timeout=5)
        for env in self.local or []:
            env.close()
        self.connections, self.processes, self.local = [], [], None


class PoolView:
    """Copies `copies` of an EnvPool, seen as copies 0 … len(copies) − 1 (a group evaluated in rounds
    steps one round's runs on part of the pool)."""

    def __init__(self, pool, copies):
        self.pool, self.copies = pool, np.asarray(copies, int)
        self.num_envs = len(self.copies)

    def step(self, actions, copies):
        return self.pool.step(actions, self.copies[np.asarray(copies, int)])

    def reset(self, copies, seeds, replays=None):
        return self.pool.reset(self.copies[np.asarray(copies, int)], seeds, replays)
