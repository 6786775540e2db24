"""Run configuration as typed structs with defaults that run: the leaves every other room reads.

Invariant: every module here imports nothing heavier than msgspec (and ``turnrl.protocol`` / ``turnrl.errors``);
every knob has one home; a struct is validated when it is built, so no work starts on a bad value.

- ``train``: ``TrainConfig`` and its sections (env, rollout, algo, model, eval); ``to_dict``
- ``episode``: how one episode runs        - ``generation``: where generations come from
- ``algo``: learner, critic, advantages     - ``curriculum``: turn-cap schedules
- ``model``: the embedded default model     - ``records``: TensorBoard / W&B
- ``envs``: env worker processes            - ``eval``: ``turnrl eval``
- ``toml_file``: TOML files and ``--set key=value`` overrides, validated by path
"""

from turnrl.config.train import (
    AlgoConfig,
    EnvConfig,
    EvalConfig,
    ModelConfig,
    RolloutConfig,
    TrainConfig,
    to_dict,
)

__all__ = ["AlgoConfig", "EnvConfig", "EvalConfig", "ModelConfig", "RolloutConfig", "TrainConfig", "to_dict"]
