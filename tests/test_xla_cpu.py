"""The entry points turn off XLA:CPU's YNNPACK fusions on affected jaxlib releases, before JAX starts."""

import os
import pathlib
import platform
import subprocess
import sys

import pytest

from launch.xla_cpu import YNN_FLAG, jaxlib_release, turn_off_ynn_fusions

REPO = pathlib.Path(__file__).resolve().parents[1]

# Prints whether XLA:CPU compiled a small layer-norm-like function with a YNNPACK fusion.
COMPILES_WITH_YNN = """
import jax, jax.numpy as jnp
x = jnp.ones((256, 64))
f = lambda x, y: jnp.sum(jnp.tanh(x) * y - jnp.mean(x, -1, keepdims=True), -1)
print('__ynn_fusion' in jax.jit(f).lower(x, x).compile().as_text())
"""


def test_flag_added_only_where_it_exists_and_is_not_set():
    environ = {'XLA_FLAGS': '--xla_backend_optimization_level=0'}
    assert turn_off_ynn_fusions(environ, release=(0, 10), machine='x86_64')
    assert environ['XLA_FLAGS'] == f'--xla_backend_optimization_level=0 {YNN_FLAG}='
    assert not turn_off_ynn_fusions(environ, release=(0, 10), machine='x86_64')  # already there: not twice
    assert environ['XLA_FLAGS'].count(YNN_FLAG) == 1

    mine = {'XLA_FLAGS': f'{YNN_FLAG}=dot'}
    assert not turn_off_ynn_fusions(mine, release=(0, 11), machine='x86_64')
    assert mine == {'XLA_FLAGS': f'{YNN_FLAG}=dot'}

    # A release without the flag (XLA would abort on it), and a CPU where the slowdown was not measured.
    for release, machine in (((0, 6), 'x86_64'), ((0, 12), 'x86_64'), ((0, 10), 'arm64'), ((1, 0), 'x86_64')):
        environ = {}
        assert not turn_off_ynn_fusions(environ, release=release, machine=machine)
        assert environ == {}
    # platform.machine() spells it AMD64 on Windows.
    assert turn_off_ynn_fusions(environ, release=(0, 10), machine='AMD64')


@pytest.mark.parametrize(
    'version, release', [('0.10.2', (0, 10)), ('1.0', (1, 0)), ('0.4.36.dev20240101', (0, 4)), ('dev', None)]
)
def test_the_jaxlib_release_is_its_major_and_minor_or_none_when_unreadable(version, release, monkeypatch):
    from launch import xla_cpu

    monkeypatch.setattr(xla_cpu.metadata, 'version', lambda name: version)
    assert jaxlib_release() == release


def _compiles_with_ynn(preamble):
    env = dict(os.environ)
    env['XLA_FLAGS'] = ' '.join(f for f in env.get('XLA_FLAGS', '').split() if not f.startswith(YNN_FLAG))
    out = subprocess.run(
        [sys.executable, '-c', preamble + COMPILES_WITH_YNN], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == 'True'


@pytest.mark.parametrize('script', ['offline.py', 'o2o.py', 'bench.py', 'diagnose.py'])
def test_entry_points_turn_off_ynn_before_jax_starts(script):
    if not turn_off_ynn_fusions({}):  # the rule, asked about this machine
        pytest.skip(f'jaxlib {jaxlib_release()} on {platform.machine()}: the entry points leave XLA_FLAGS alone')
    assert _compiles_with_ynn(''), 'this jaxlib makes no YNNPACK fusion here: the check below would prove nothing'
    # The script's module-level code (its preamble and imports) runs; its main() does not.
    preamble = f"import runpy; runpy.run_path('launch/{script}', run_name='preamble')\n"
    assert not _compiles_with_ynn(preamble)
