"""Agents by name. Each module exposes `Agent` (with create / update / sample_actions), `Config` and
`get_config(family, overrides, mode)`. Agents whose evaluation policy differs from the one that collects
online data (the deterministic IQL, ReBRAC and SAC policies, as FQL's code evaluates them) also define
`eval_actions(observations, rng)`; the others are evaluated with `sample_actions`."""

from agents import fav, fql, ifql, iql, rebrac, sac

AGENTS = {'fav': fav, 'fql': fql, 'ifql': ifql, 'iql': iql, 'rebrac': rebrac, 'sac': sac}
