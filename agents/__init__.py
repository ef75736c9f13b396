"""Agents by name. Each module exposes `Agent` (with create / update / sample_actions), `Config` and
`get_config(family, overrides)`."""

from agents import fav

AGENTS = {'fav': fav}
