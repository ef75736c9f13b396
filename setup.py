from pathlib import Path

from setuptools import setup

requirements = [
    line.strip()
    for line in Path(__file__).with_name('requirements.txt').read_text().splitlines()
    if line.strip() and not line.startswith('#')
]

# Benchmark tables (launch/tables.py). rliable 1.2.0 passes `random_state` to arch's bootstrap, which
# arch 8 no longer accepts, and arch 7 breaks on pandas 3: hence the two upper bounds.
TABLES = ['rliable==1.2.0', 'arch>=7,<8', 'pandas<3', 'matplotlib>=3.8']
SWEEP = ['ray>=2.9']  # launch/sweep.py; without it, jobs run one after another
MINARI = ['minari[hdf5,create]==0.5.4', 'gymnasium-robotics==1.4.2']
WANDB = ['wandb>=0.19.10']  # --wandb; 0.19.10 is the first with reinit='create_new' (a group's runs in one process)

setup(
    name='fav-rl',
    version='0.1.0',
    description='FAV and baselines for offline and offline-to-online RL in JAX',
    python_requires='>=3.10',
    # Install editable (`pip install -e .`): the top-level `datasets` package would otherwise land in
    # site-packages beside Hugging Face's package of the same name.
    packages=['agents', 'envs', 'datasets', 'launch'],
    install_requires=requirements,
    extras_require={
        # pytest-timeout: a test that hangs fails alone, with its stack, instead of stalling the whole run;
        # pytest-xdist: the suite in one process per core (`-n 2`), about half the time on a 2-core machine.
        'test': [
            'pytest>=8',
            'pytest-timeout>=2.3',
            'pytest-xdist>=3.5',
            'scipy>=1.11',
            *TABLES,
            *SWEEP,
            *MINARI,
            *WANDB,
        ],
        'diagnose': ['matplotlib>=3.8', 'scipy>=1.11'],
        'dev': ['ruff==0.17.6'],  # the lint and format check (settings in pyproject.toml)
        'wandb': WANDB,
        'tables': TABLES,
        'sweep': SWEEP,
        # D4RL AntMaze, maintained path: Minari's re-collected datasets on gymnasium-robotics' AntMaze.
        'minari': MINARI,
        # D4RL AntMaze as the paper ran it: Python 3.10, MuJoCo 2.1 + OSMesa headers. d4rl also pulls in mujoco-py,
        # whose files overwrite free-mujoco-py's: the README's setup reinstalls free-mujoco-py after this.
        'd4rl': ['d4rl==1.1', 'gym==0.23.1', 'free-mujoco-py==2.1.6', 'Cython<3', 'numpy==1.26.*', 'h5py'],
    },
)
