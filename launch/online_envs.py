"""The online phase's envs, one per run of a group, and each run's episode bookkeeping.

An env step of every run at once gives the transitions the O2O loop stores. Each run's episodes are
reset with seeds from its seed and episode index, and the actions of its episode in progress are
kept, so a resumed run replays its env to the same state (both go into the run's checkpoint).
"""

import numpy as np

from envs.evaluation import episode_seed


def make_transition(observation, action, next_observation, reward, terminated, truncated, reward_shift):
    """The stored transition of an env step (arrays, or arrays over runs). `masks` is 0 only on
    termination: a truncated episode's last value still bootstraps. `terminals` marks either end of an
    episode. Rewards get the family's shift, as the dataset's did."""
    terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
    transition = dict(
        observations=observation,
        actions=action,  # the buffer clips what it stores
        next_observations=next_observation,
        rewards=np.asarray(reward, np.float32) + np.float32(reward_shift),
        masks=1.0 - terminated,
        terminals=terminated | truncated,
    )
    return {k: np.asarray(v, np.float32) for k, v in transition.items()}


class OnlineEnvs:
    """The envs of R runs (an `EnvPool` of R copies, given to `start`) and their episodes."""

    def __init__(self, seeds, reward_shift):
        self.seeds, self.reward_shift = list(seeds), reward_shift
        self.pool = None
        self.episode_index = [0] * len(self.seeds)
        self.episode_actions = [[] for _ in self.seeds]  # of the episode in progress, for a replay on resume
        self.recent_episodes = [[] for _ in self.seeds]  # (success, return, length) since `pop_recent`
        self.observations = None  # (R, obs) of the episodes in progress

    def start(self, pool):
        """Takes the pool and puts every run's env where its episode in progress is."""
        self.pool = pool
        self._reset(range(len(self.seeds)))

    def step(self, actions):
        """One env step of every run with its action (R, act) → the stored transitions (R, ...). Runs whose
        episode ended start their next one."""
        results = self.pool.step(actions)
        next_observations = np.stack([res[0] for res in results]).astype(np.float32)
        terminated = np.array([res[2] for res in results])
        truncated = np.array([res[3] for res in results])
        rewards = [res[1] for res in results]
        transition = make_transition(
            self.observations, actions, next_observations, rewards, terminated, truncated, self.reward_shift
        )
        self.observations = next_observations
        ended = []
        for r, (_, _, _, _, success, episode_return, episode_length) in enumerate(results):
            self.episode_actions[r].append(actions[r])
            if terminated[r] or truncated[r]:
                self.recent_episodes[r].append((success, episode_return, episode_length))
                self.episode_index[r] += 1
                self.episode_actions[r] = []
                ended.append(r)
        if ended:
            self._reset(ended)
        return transition

    def _reset(self, which):
        # A new array, never written in place: the last transition holds the old one as its next observations.
        seeds = [episode_seed(self.seeds[r], 2, self.episode_index[r]) for r in which]
        observations = self.pool.reset(list(which), seeds, [self.episode_actions[r] for r in which])
        current = [None] * len(self.seeds) if self.observations is None else list(self.observations)
        for r, observation in zip(which, observations, strict=True):
            current[r] = observation
        self.observations = np.stack(current).astype(np.float32)

    def pop_recent(self, r):
        """Run r's episodes finished since the last call, as log fields (mean success, return, length and
        the number of episodes so far), or {} if none finished."""
        if not self.recent_episodes[r]:
            return {}
        success, episode_return, length = np.mean(self.recent_episodes[r], axis=0)
        self.recent_episodes[r] = []
        return dict(
            online_success=success,
            online_return=episode_return,
            online_length=length,
            online_episodes=self.episode_index[r],
        )

    def state(self, r, action_dim):
        """Run r's part of a checkpoint."""
        return dict(
            episode_index=self.episode_index[r],
            episode_actions=np.asarray(self.episode_actions[r], np.float32).reshape(-1, action_dim),
            recent_episodes=np.asarray(self.recent_episodes[r], np.float64).reshape(-1, 3),
        )

    def restore(self, r, state):
        self.episode_index[r] = int(state['episode_index'])
        self.episode_actions[r] = list(state['episode_actions'])
        self.recent_episodes[r] = [tuple(e) for e in state['recent_episodes']]

    def close(self):
        if self.pool is not None:
            self.pool.close()
