"""The parser every launch/ command line uses: a mistake is one line, not argparse's usage block."""

import argparse


class CommandLineParser(argparse.ArgumentParser):
    """`hints`: {a part of argparse's error message: the line to print instead}, for mistakes a command
    can say more about (offline.py's --agent rlpd)."""

    def __init__(self, *args, hints=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hints = dict(hints or {})

    def error(self, message):
        message = next((hint for part, hint in self.hints.items() if part in message), message)
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')
