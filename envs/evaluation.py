"""Evaluation episodes and the protocol's final score, computed in one place."""

import numpy as np

FINAL_SCORE_WINDOW = 3  # the reported score is the mean of the last 3 evaluations


def episode_seed(*keys):
    """A reset seed derived from integers (run seed, step, episode…), stable across runs and resumes."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def evaluate(pool, act, num_episodes, run_seed_keys):
    """Runs `num_episodes` episodes for each of R runs on an EnvPool of R × n copies (run r: copies
    r·n … r·n + n − 1), all stepped together.

    `act(observations, t) -> actions` acts for all copies at once (one batched policy call). Copy i of
    a run runs a fixed quota of episodes (num_episodes split evenly), so that early-ending episodes
    (successes terminate) are not over-counted. The first reset of copy i of run r is seeded from
    `run_seed_keys[r] + (i,)`; later resets continue its own generator, one step after the episode
    ended (the action of that step is ignored, as in gymnasium's NEXT_STEP autoreset), so an
    evaluation is reproducible for a given n, whatever the other runs of the group.
    Returns, per run, success rate (0–1), mean return and mean length.
    """
    runs = len(run_seed_keys)
    n = pool.num_envs // runs
    quota = [num_episodes // n + (i < num_episodes % n) for i in range(n)] * runs
    results = [[] for _ in range(pool.num_envs)]
    copies = range(pool.num_envs)
    observations = np.stack(pool.reset(copies, [episode_seed(*run_seed_keys[c // n], c % n) for c in copies]))
    ended = np.zeros(pool.num_envs, bool)
    t = 0
    while any(len(r) < q for r, q in zip(results, quota, strict=True)):
        actions = act(observations, t)
        stepped = np.flatnonzero(~ended)
        if ended.any():
            restarted = np.flatnonzero(ended)
            for c, observation in zip(restarted, pool.reset(restarted, [None] * len(restarted)), strict=True):
                observations[c] = observation
            ended[:] = False
        for c, (observation, _, terminated, truncated, success, ret, length) in zip(
            stepped, pool.step(actions[stepped], stepped), strict=True
        ):
            observations[c] = observation
            ended[c] = terminated or truncated
            if ended[c] and len(results[c]) < quota[c]:
                results[c].append((success, ret, length))
        t += 1
    out = []
    for r in range(runs):
        success, episode_return, episode_length = np.mean([e for c in results[r * n : r * n + n] for e in c], axis=0)
        out.append(
            dict(success=float(success), episode_return=float(episode_return), episode_length=float(episode_length))
        )
    return out


def evaluation_rounds(run_tasks, copies_per_run, max_copies):
    """Evaluates a group in rounds so that at most about `max_copies` env copies are alive at once (an
    OGBench manipulation env takes about 150 MB). `run_tasks`: each run's task name. → (the task of each
    copy of the evaluation pool, [(run indices, their copies) per round]). Every task keeps at least one
    run's copies, and a run's results do not depend on the round it is in: each evaluation seeds its
    copies afresh.
    """
    names = list(dict.fromkeys(run_tasks))
    runs_of = {name: [r for r, task in enumerate(run_tasks) if task == name] for name in names}
    slots = {name: min(len(runs_of[name]), max(1, max_copies // (copies_per_run * len(names)))) for name in names}
    copy_tasks, first_copy = [], {}
    for name in names:
        first_copy[name] = len(copy_tasks)
        copy_tasks += [name] * (slots[name] * copies_per_run)
    rounds = []
    for j in range(max(-(-len(runs_of[name]) // slots[name]) for name in names)):
        runs, copies = [], []
        for name in names:
            for slot, r in enumerate(runs_of[name][j * slots[name] : (j + 1) * slots[name]]):
                start = first_copy[name] + slot * copies_per_run
                runs.append(r)
                copies += range(start, start + copies_per_run)
        rounds.append((runs, copies))
    return copy_tasks, rounds


def final_score(success_rates):
    """Protocol score in [0, 100]: mean success rate of the last FINAL_SCORE_WINDOW evaluations, × 100."""
    if len(success_rates) == 0:
        raise ValueError('no evaluation was run, so there is no final score')
    return 100.0 * float(np.mean(success_rates[-FINAL_SCORE_WINDOW:]))
