"""The docs' per-environment tables (docs/algorithm.md for FAV, docs/agents.md for the baselines) against the ones
the registry and the agents' configs read, row for row: a reader picks settings from the docs, so the two must not
drift apart."""

import re
from pathlib import Path

from agents import fql, iql, rebrac
from envs.registry import FAMILIES

DOCS_DIR = Path(__file__).resolve().parents[1] / 'docs'
DOCS = ' '.join((DOCS_DIR / 'agents.md').read_text().split())
# The docs name OGBench environments without their dataset suffix (cube-single for cube-single-play) and the
# D4RL tasks without antmaze- and -v2 in FQL's table.
SHORT = {name.rsplit('-', 1)[0]: name for name in FAMILIES if not name.endswith('-v2')}
D4RL = [name for name in FAMILIES if name.endswith('-v2')]


def _after(marker):
    assert marker in DOCS, f'docs/agents.md no longer has {marker!r}'
    return DOCS.split(marker, 1)[1]


def test_iql_awr_temperatures():
    listed, rest = _after('α per environment (offline and O2O alike): ').split(';', 1)
    documented = {SHORT[env]: float(value) for env, value in re.findall(r'([a-z0-9x-]+) ([0-9.]+)', listed)}
    d4rl_alpha = float(re.match(r' the six D4RL AntMaze tasks ([0-9.]+) \(IQL', rest).group(1))
    assert {**documented, **dict.fromkeys(D4RL, d4rl_alpha)} == iql.AWR_ALPHA


def test_rebrac_bc_coefficients():
    listed, rest = _after('(α_actor, α_critic) per environment (offline and O2O alike): ').split(';', 1)
    pairs = re.findall(r'([a-z0-9x-]+) \(([0-9.]+), ([0-9.]+)\)', listed)
    documented = {SHORT[env]: (float(actor), float(critic)) for env, actor, critic in pairs}
    d4rl = re.match(r" the six D4RL AntMaze tasks take ReBRAC's own per-dataset values [^:]*: (.+?)\. ReBRAC's", rest)
    d4rl_pairs = re.findall(r'([a-z-]+) \(([0-9.]+), ([0-9.]+)\)', d4rl.group(1))
    documented.update({f'antmaze-{task}-v2': (float(actor), float(critic)) for task, actor, critic in d4rl_pairs})
    assert documented == rebrac.BC_COEFFICIENTS


def test_fql_distillation_weights_offline_and_o2o():
    table = _after('| environment | offline | O2O | |---|---|---| ').split(' The ', 1)[0]
    offline, o2o = {}, {}
    for envs, off, on in re.findall(r'\| ([^|]+) \| ([0-9.]+) \| ([0-9.]+) \|', table):
        if envs.startswith('D4RL antmaze '):
            names = [f'antmaze-{env.strip()}-v2' for env in envs.removeprefix('D4RL antmaze ').split(',')]
        else:
            names = [SHORT[env.strip()] for env in envs.split(',')]
        offline.update(dict.fromkeys(names, float(off)))
        o2o.update(dict.fromkeys(names, float(on)))
    assert offline == fql.OFFLINE_ALPHA
    assert o2o == fql.O2O_ALPHA


def test_fav_settings_per_environment():
    """Each row: (σ, β), FAV-Adaptive's β, and what differs from γ = 0.99, q_agg = mean and unshifted rewards."""
    rows = re.findall(
        r'^\| (?:D4RL )?([a-z0-9x-]+) \| \(([0-9.]+), ([0-9.]+)\) \| ([0-9.]+) \| ([^|]*)\|$',
        (DOCS_DIR / 'algorithm.md').read_text(),
        re.MULTILINE,
    )
    documented = {}
    for name, sigma, beta, adaptive_beta, other in rows:
        discount = re.search(r'γ = ([0-9.]+)', other)
        documented[name] = (
            float(sigma),
            float(beta),
            float(adaptive_beta),
            float(discount.group(1)) if discount else 0.99,
            'min' if 'q_agg = min' in other else 'mean',
            -1 if 'r ← r − 1' in other else 0,
        )
    registry = {
        f.name: (f.sigma, f.beta, f.adaptive_beta, f.discount, f.q_agg, f.reward_shift) for f in FAMILIES.values()
    }
    assert documented == registry
