"""The run directory: config.json, train.csv, eval.csv, final.json, and optional wandb mirroring."""

import csv
import hashlib
import io
import json
import os
import uuid

from launch.checkpoint import atomic_write_bytes

# Written into a run directory whose run stopped on non-finite values: a rerun skips it (delete it to retry).
STOPPED_NAME = 'stopped.json'


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode())


class RunFileError(Exception):
    """A JSON file of a run directory that cannot be read."""


def read_json(path):
    """The JSON object in `path`; a damaged file raises RunFileError, in one line that names it."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(
            f'{path} is not readable JSON ({e}); fix it, or delete its run directory to train the run again'
        ) from None
    if not isinstance(data, dict):
        raise RunFileError(f'{path} holds {type(data).__name__}, not a JSON object; fix it or delete its run directory')
    return data


class RunLogger:
    """Keeps every logged row in memory (they go into checkpoints) and rewrites the CSVs atomically."""

    def __init__(self, run_dir, wandb_mode='disabled', wandb_config=None, rows=None, alone=True, wandb_id=None):
        """`rows` and `wandb_id`: restored from the run's checkpoint (None when the run starts from step 0)."""
        self.run_dir = run_dir
        self.rows = rows or {'train': [], 'eval': []}
        self.wandb_run = None
        self.wandb_id = wandb_id  # kept in the checkpoint: a resume continues this wandb run
        if wandb_mode != 'disabled':
            import wandb  # optional dependency: only imported when asked for

            if self.wandb_id is None and rows is not None:  # a checkpoint from before ids were kept in it
                self.wandb_id = hashlib.sha1(os.path.abspath(run_dir).encode()).hexdigest()[:16]
            elif self.wandb_id is None:  # from step 0: a wandb run of its own, not that of a deleted run of this path
                self.wandb_id = uuid.uuid4().hex[:16]
            self.wandb_run = wandb.init(
                project='fav-rl',
                mode=wandb_mode,
                config=wandb_config,
                dir=run_dir,
                id=self.wandb_id,
                resume='allow',
                reinit='create_new',  # a group's runs are one process's concurrent wandb runs
                # The console is the group's, not the run's: N copies of it would be no one's log.
                settings=wandb.Settings(console='auto' if alone else 'off'),
            )
            self._resend_restored_rows()
        for name in self.rows:
            self._write_csv(name)

    def _resend_restored_rows(self):
        """A run killed outright (SIGKILL, a lost node) takes wandb's unsent rows with it, while its checkpoint
        keeps them: send the checkpoint's rows from the wandb run's current step on (online: its last step on
        the server; offline: 0, each attempt being a local record of its own), in step order as wandb needs."""
        restored = sorted(
            ((row['step'], name, row) for name in self.rows for row in self.rows[name]), key=lambda r: r[0]
        )
        for step, name, row in restored:
            if step >= self.wandb_run.step:
                self._send(name, row)

    def _send(self, name, row):
        self.wandb_run.log({f'{name}/{k}': v for k, v in row.items() if k != 'step'}, step=int(row['step']))

    def log(self, name, row):
        self.rows[name].append(row)
        self._write_csv(name)
        if self.wandb_run is not None:
            self._send(name, row)

    def _write_csv(self, name):
        rows = self.rows[name]
        # A fixed column order: rows restored from a checkpoint come back with their keys sorted.
        keys = {k for row in rows for k in row}
        columns = [k for k in ('step', 'phase') if k in keys] + sorted(keys - {'step', 'phase'})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(os.path.join(self.run_dir, f'{name}.csv'), buffer.getvalue().encode())

    def finish(self):
        if self.wandb_run is not None:
            self.wandb_run.finish()
