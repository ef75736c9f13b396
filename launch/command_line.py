"""The parser every launch/ command line uses: a mistake is one line, not argparse's usage block."""

import argparse
import os
import sys
import tempfile

from datasets.files import nearest_existing
from launch.stops import how_it_stopped, raise_if_stopped, stops_raised


class UserError(Exception):
    """A bad setting or input: reported as one line, exit code 2."""


def first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def out_of_memory(error):
    """Whether `error` (a MemoryError, or JAX's runtime error) says memory ran out: XLA reports a failed allocation
    as RESOURCE_EXHAUSTED, or as INTERNAL when a later call meets it."""
    message = str(error)
    return isinstance(error, MemoryError) or 'RESOURCE_EXHAUSTED' in message or 'Out of memory' in message


class CommandLineParser(argparse.ArgumentParser):
    """`hints`: {a part of argparse's error message: the line to print instead}, for mistakes a command
    can say more about (offline.py's --agent rlpd)."""

    def __init__(self, *args, hints=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hints = dict(hints or {})

    def error(self, message):
        message = next((hint for part, hint in self.hints.items() if part in message), message)
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


def print_to_a_pipe(text):
    """Prints `text`; a reader that stops early (`| head`) ends the program quietly, as it does `ls`."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too


def check_folder(flag, path):
    """Refuses, in one line, a folder that cannot exist because a file, or a link to nothing, is in its way
    (nothing is created)."""
    if not path:  # '' would be the working directory, or a default, unasked
        raise UserError(f'{flag} is empty: give a folder, or leave {flag} out for the default')
    existing = nearest_existing(path)
    if not os.path.exists(existing):  # a link to nothing, e.g. to scratch space that is not mounted
        raise UserError(f'{flag} {path}: {existing} is a link to {os.readlink(existing)}, which does not exist')
    if not os.path.isdir(existing):
        raise UserError(f'{flag} {path}: {existing} is a file; pass a folder')
    return existing


def check_writable_folder(flag, path):
    """check_folder, and that a file can be made where the folder will be: an output folder refused up front,
    not after minutes of work. (os.access would not do: it says yes to root even where writing fails.)"""
    existing = check_folder(flag, path)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        message = f'{flag} {path}: cannot write in {existing} ({e.strerror}); pass a folder you can write to'
        raise UserError(message) from None


def stop_on_ctrl_c(main):
    """Runs a command's main(): Ctrl-C ends it in one line with exit code 130 (SIGTERM: 143), as the training
    commands stop, not with a traceback; one that came while the command imported (record_stops) before main()."""
    with stops_raised():
        try:
            raise_if_stopped()
            return main()
        except KeyboardInterrupt as e:
            stopped, code = how_it_stopped(e)
            print(stopped, file=sys.stderr)
            return code
