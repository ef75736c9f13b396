"""The parser every launch/ command line uses: a mistake is one line, not argparse's usage block."""

import argparse
import os
import sys


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
