"""How one episode runs: turn cap, token budgets, sampling, timeouts, reward mode, decoding.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec


class EpisodeConfig(msgspec.Struct, frozen=True, kw_only=True):
    turn_cap: int = 6
    max_new_tokens: int = 24
    max_total_tokens: int = 4096
    temperature: float = 1.0
    top_p: float = 1.0
    generation_timeout_s: float | None = None
    env_timeout_s: float | None = 60.0
    episode_timeout_s: float | None = None
    reward_mode: str = "last"  # "last" (AgentGym: the last step's reward) or "sum" over turns
    constrain_to_valid_actions: bool = False  # sample only replies that perform a currently valid action
    invalid_reply_penalty: float = 0.0  # subtracted from the episode's reward per reply the env found invalid
    # Free text: record the env's listed replies on every turn (not enforced), so the learner trains a reply on
    # the list renormalised over the list, and a reply that left it only towards the list (see training.batch).
    learn_from_listed_actions: bool = False

    def __post_init__(self) -> None:
        if self.turn_cap < 1:
            raise ValueError(f"turn_cap must be >= 1, got {self.turn_cap}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        for name in ("generation_timeout_s", "env_timeout_s", "episode_timeout_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")
        if not self.invalid_reply_penalty >= 0:
            raise ValueError(f"invalid_reply_penalty must be >= 0, got {self.invalid_reply_penalty}")
        if self.learn_from_listed_actions and self.constrain_to_valid_actions:
            raise ValueError(
                "learn_from_listed_actions is for free text; with constrain_to_valid_actions every reply is on the list"
            )
        if self.reward_mode not in ("last", "sum"):
            raise ValueError(f"reward_mode must be 'last' or 'sum', got {self.reward_mode!r}")

    def constrained(self) -> EpisodeConfig:
        """This episode with its replies sampled only from the env's listed ones (so not also recorded beside
        them: listing is the free-text learner's concern)."""
        return msgspec.structs.replace(self, constrain_to_valid_actions=True, learn_from_listed_actions=False)
