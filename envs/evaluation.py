"""Evaluation episodes and the protocol's final score, computed in one place."""

import numpy as np

FINAL_SCORE_WINDOW = 3  # the reported score is the mean of the last 3 evaluations


def episode_seed(*keys):
    """A reset seed derived from integers (run seed, step, episode…), stable across runs and resumes."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def evaluate(env, act, num_episodes, seed_keys):
    """Runs `num_episodes` episodes with `act(observation, episode, t) -> action`.

    Returns success rate (0–1), mean return and mean length; episode i resets with a seed derived from
    `seed_keys + (i,)` so an evaluation is reproducible.
    """
    successes, returns, lengths = [], [], []
    for episode in range(num_episodes):
        observation, _ = env.reset(seed=episode_seed(*seed_keys, episode))
        done, t = False, 0
        while not done:
            observation, _, terminated, truncated, info = env.step(act(observation, episode, t))
            done, t = terminated or truncated, t + 1
        successes.append(info['episode']['success'])
        returns.append(float(info['episode']['r']))
        lengths.append(int(info['episode']['l']))
    return dict(success=float(np.mean(successes)), episode_return=float(np.mean(returns)), episode_length=float(np.mean(lengths)))


def final_score(success_rates):
    """Protocol score in [0, 100]: mean success rate of the last FINAL_SCORE_WINDOW evaluations, × 100."""
    if len(success_rates) == 0:
        raise ValueError('no evaluation was run, so there is no final score')
    return 100.0 * float(np.mean(success_rates[-FINAL_SCORE_WINDOW:]))
