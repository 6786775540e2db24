"""The embedded default model and its format warm-up.

Invariant: a leaf: imports nothing heavier than msgspec; a struct is validated when built (a bad value raises
``ValueError`` naming its key).
"""

from __future__ import annotations

import msgspec

TOKENIZER_SPLITS = ("phrase", "word")


REPLY_TARGETS = ("sampled", "listed")
ACTION_DRAWS = ("uniform", "first_word")
# Written into ``RUN/base_model`` beside the weights: the embedded default's family, env options and
# ``DefaultModelConfig``. ``turnrl train --model`` on such a directory keeps the recipe's episode settings (the
# tiny model's listed-reply training and short replies), which a real language model's directory does not get.
EMBEDDED_BASE_FILE = "embedded_base.json"


class WarmupConfig(msgspec.Struct, frozen=True, kw_only=True):
    episodes: int = 1600
    turn_cap: int = 3
    epochs: int = 1
    lr: float = 3e-3
    batch_episodes: int = 16
    micro_batch_tokens: int = 16384
    observation_loss: bool = True  # also model the observation text (language modelling of transcripts)
    # a reply token's target: the token the random player wrote, or its next-token distribution over the listed
    # replies there (the same objective in expectation, without the sampling noise; see engine.training.warmup)
    reply_targets: str = "sampled"
    # rows of repeated random tokens added to every warm-up step, their continuation's likelihood in the loss, so
    # that copying a span seen earlier is kept while the format is learnt (see engine.training.copy_rehearsal); 0: off
    copy_rehearsal_rows: int = 0
    # the random player's pick among the listed actions: "uniform" over them, or "first_word": uniform over their
    # first words (get / craft, <search> / <answer>), then over the actions starting with the word drawn, so a
    # kind of action listed once is played as often as one listed ten times (see engine.training.warmup)
    action_draw: str = "uniform"

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.turn_cap < 1 or self.epochs < 1 or self.batch_episodes < 1:
            raise ValueError("warm-up episodes, turn_cap, epochs and batch_episodes must be >= 1")
        if self.copy_rehearsal_rows < 0:
            raise ValueError(f"copy_rehearsal_rows must be >= 0, got {self.copy_rehearsal_rows}")
        if self.reply_targets not in REPLY_TARGETS:
            raise ValueError(f"reply_targets must be one of {', '.join(REPLY_TARGETS)}, got {self.reply_targets!r}")
        if self.action_draw not in ACTION_DRAWS:
            raise ValueError(f"action_draw must be one of {', '.join(ACTION_DRAWS)}, got {self.action_draw!r}")


class DefaultModelConfig(msgspec.Struct, frozen=True, kw_only=True):
    preset: str = "tiny"
    vocab_size: int = 2048
    tokenizer_split: str = "phrase"  # pre-tokenisation of the locally trained BPE (see models.tokenizer)
    max_positions: int = 4096
    copy_init_layer: int = 0  # the attention layer that starts as a copy head (see models.tiny.copy_friendly_init)
    # the share of a token's initial embedding taken from the words it spells (see models.tiny.word_bag_init); 0: off
    word_share: float = 0.0
    # layers 0-1 start as an induction circuit in place of the copy head (see models.induction_init)
    induction_init: bool = False
    warmup: WarmupConfig = WarmupConfig()

    def __post_init__(self) -> None:
        if self.tokenizer_split not in TOKENIZER_SPLITS:
            raise ValueError(
                f"tokenizer_split must be one of {', '.join(TOKENIZER_SPLITS)}, got {self.tokenizer_split!r}"
            )
        if self.copy_init_layer < 0:
            raise ValueError(f"copy_init_layer must be >= 0, got {self.copy_init_layer}")
        if not 0.0 <= self.word_share <= 1.0:
            raise ValueError(f"word_share must be in [0, 1], got {self.word_share}")
