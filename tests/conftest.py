import pytest


@pytest.fixture(scope='session')
def dataset(tmp_path_factory):
    """A tiny generated cube-single dataset (2 episodes of 200 steps), shared by the end-to-end tests."""
    from datasets.generate import generate_dataset

    out = tmp_path_factory.mktemp('data')
    train_path, _ = generate_dataset(
        'cube-single', str(out), episodes=2, seed=0, workers=1, episode_length=201, progress=False
    )
    return train_path
