"""Agents by name. Each module exposes `Agent` (with create / update / sample_actions), `Config` and
`get_config(family, overrides, mode)`."""

from agents import fav, fql, ifql

AGENTS = {'fav': fav, 'fql': fql, 'ifql': ifql}
