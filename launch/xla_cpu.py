"""An XLA:CPU setting the entry points apply before JAX starts its backend.

jaxlib 0.10 and 0.11 hand element-wise and reduction fusions on x86-64 CPUs to YNNPACK, an
experimental XLA:CPU backend. For these agents' small-network updates that is slower: on a 2-core x86-64
CPU, one run with 64×64 networks makes 1.8× the updates/s without it for FAV and 1.1-1.7× for the other
agents (the README's speed section). jax-ml/jax#37465 reports the same slowdown. XLA reads XLA_FLAGS when JAX
starts its backend, so the flag must be set before the first array is made; a setting of the user's
own is left as it is. The flag only affects the CPU backend, so GPU runs are unchanged.
"""

import os
import platform
from importlib import metadata

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
# jaxlib releases that have the flag and the slowdown. An older one lacks the flag, and a newer one may
# lack it too: XLA aborts on an unknown flag, so other releases are left alone.
SLOW_YNN_RELEASES = ((0, 10), (0, 11))


def jaxlib_release():
    """(major, minor) of the installed jaxlib, or None when it is not installed or is unreadable."""
    try:
        major, minor = metadata.version('jaxlib').split('.')[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def turn_off_ynn_fusions(environ=None, release=None, machine=None):
    """Adds `--xla_cpu_experimental_ynn_fusion_type=` (no YNNPACK fusions) to XLA_FLAGS on x86-64
    with an affected jaxlib, unless XLA_FLAGS already sets it. → whether XLA_FLAGS changed."""
    environ = os.environ if environ is None else environ
    release = jaxlib_release() if release is None else release
    machine = platform.machine() if machine is None else machine
    flags = environ.get('XLA_FLAGS', '')
    if release not in SLOW_YNN_RELEASES or machine.lower() not in ('x86_64', 'amd64') or YNN_FLAG in flags:
        return False
    environ['XLA_FLAGS'] = f'{flags} {YNN_FLAG}='.strip()
    return True
