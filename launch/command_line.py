"""The parser every launch/ command line uses: a mistake is one line, not argparse's usage block."""

import argparse


class CommandLineParser(argparse.ArgumentParser):
    def error(self, message):
        if self.prog == 'launch/offline.py' and "invalid choice: 'rlpd'" in message:
            message = '--agent rlpd trains online from scratch: use launch/o2o.py --agent rlpd'
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')
