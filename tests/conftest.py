"""Fixtures shared by the test files."""

import pytest


@pytest.fixture(scope='session')
def dataset(tmp_path_factory):
    """A tiny generated cube-single dataset (2 episodes of 201 steps): the path of its train file."""
    from datasets.generate import generate_dataset

    out = tmp_path_factory.mktemp('data')
    train_path, _ = generate_dataset(
        'cube-single', str(out), episodes=2, seed=0, workers=1, episode_length=201, progress=False
    )
    return train_path
