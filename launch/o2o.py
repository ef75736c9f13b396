"""Offline-to-online RL on one task: 1M offline steps, then 1M env steps with one update each.

python launch/o2o.py --env cube-double"""

import pathlib
import sys

# Run as a script, Python puts launch/ on the path; the project's packages live one level up.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from launch.stops import record_stops  # noqa: E402
from launch.xla_cpu import turn_off_ynn_fusions  # noqa: E402

if __name__ == '__main__':  # not when imported: the importer's own Ctrl-C stays as it was
    record_stops()  # a Ctrl-C during the imports below is raised, in one line, once they are done
turn_off_ynn_fusions()  # before anything starts JAX's backend

from launch.loop import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main('o2o'))
