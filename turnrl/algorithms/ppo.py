"""PPO advantages: token-level GAE against a learned critic.

Invariant: advantages and returns come from GAE over the policy tokens (observation
tokens transparent, value after the last policy token 0); returns = advantages +
values are the critic's targets; advantages are whitened over the batch's policy
tokens when ``whiten`` is set (the returns are not).
"""

from __future__ import annotations

from turnrl.algorithms.base import AdvantageInputs, AdvantageOutput, whiten
from turnrl.algorithms.registry import register_advantage
from turnrl.config.algo import AdvantageParams
from turnrl.kernels import gae


@register_advantage("ppo", needs_values=True)
def ppo(inputs: AdvantageInputs, params: AdvantageParams) -> AdvantageOutput:
    if inputs.values is None:
        raise ValueError("ppo needs critic values")
    advantages, returns = gae(inputs.token_rewards, inputs.values, inputs.mask, params.gamma, params.lam)
    if params.whiten:
        advantages = whiten(advantages, inputs.mask, params.eps)
    return AdvantageOutput(advantages=advantages, returns=returns)
