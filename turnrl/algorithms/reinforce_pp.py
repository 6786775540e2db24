"""REINFORCE++ advantages: batch-whitened discounted returns, with the KL to the reference folded into the reward.

Invariant: per policy token ``r_t = reward_t - beta * kl_t`` (``kl_t`` an estimator
of log pi_old - log pi_ref on the sampled token, 0 without a reference or with
``beta = 0``); ``G_t`` is the discounted return over the row's policy tokens;
advantages are ``G`` whitened over all policy tokens of the batch (no critic, no
group baseline).
"""

from __future__ import annotations

from turnrl.algorithms.base import AdvantageInputs, AdvantageOutput, whiten
from turnrl.algorithms.kl import kl_estimate
from turnrl.algorithms.registry import register_advantage
from turnrl.config.algo import AdvantageParams
from turnrl.kernels import discounted_returns


@register_advantage("reinforce_pp", needs_reference=True)
def reinforce_pp(inputs: AdvantageInputs, params: AdvantageParams) -> AdvantageOutput:
    rewards = inputs.token_rewards.clone()
    if params.kl_reward_coef > 0:
        if inputs.ref_logprobs is None:
            raise ValueError("reinforce_pp with kl_reward_coef > 0 needs reference log-probs")
        kl = kl_estimate(inputs.old_logprobs, inputs.ref_logprobs, params.kl_reward_estimator)
        rewards = rewards - params.kl_reward_coef * kl * inputs.mask
    returns = discounted_returns(rewards, inputs.mask, params.gamma)
    return AdvantageOutput(advantages=whiten(returns, inputs.mask, params.eps))
