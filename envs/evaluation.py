"""Evaluation episodes and the protocol's final score, computed in one place."""

import numpy as np

FINAL_SCORE_WINDOW = 3  # the reported score is the mean of the last 3 evaluations


def episode_seed(*keys):
    """A reset seed derived from integers (run seed, step, episode…), stable across runs and resumes."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def evaluate(vector_env, act, num_episodes, seed_keys):
    """Runs `num_episodes` episodes on a gymnasium VectorEnv (NEXT_STEP autoreset) of n copies.

    `act(observations, t) -> actions` acts for all copies at once. Copy i runs a fixed quota of
    episodes (num_episodes split evenly), so that early-ending episodes (successes terminate) are not
    over-counted. The first reset of copy i is seeded from `seed_keys + (i,)`; later resets continue
    its own generator, so an evaluation is reproducible for a given number of copies.
    Returns success rate (0–1), mean return and mean length.
    """
    n = vector_env.num_envs
    quota = [num_episodes // n + (i < num_episodes % n) for i in range(n)]
    results = [[] for _ in range(n)]
    observations, _ = vector_env.reset(seed=[episode_seed(*seed_keys, i) for i in range(n)])
    t = 0
    while any(len(r) < q for r, q in zip(results, quota, strict=True)):
        observations, _, terminated, truncated, info = vector_env.step(act(observations, t))
        for i in np.flatnonzero(terminated | truncated):
            if len(results[i]) < quota[i]:
                results[i].append(
                    (float(info['success'][i]), float(info['episode']['r'][i]), float(info['episode']['l'][i]))
                )
        t += 1
    success, episode_return, episode_length = np.mean([e for r in results for e in r], axis=0)
    return dict(success=float(success), episode_return=float(episode_return), episode_length=float(episode_length))


def final_score(success_rates):
    """Protocol score in [0, 100]: mean success rate of the last FINAL_SCORE_WINDOW evaluations, × 100."""
    if len(success_rates) == 0:
        raise ValueError('no evaluation was run, so there is no final score')
    return 100.0 * float(np.mean(success_rates[-FINAL_SCORE_WINDOW:]))
