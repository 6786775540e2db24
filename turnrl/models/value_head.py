"""The critic for PPO: a value head on a transformer trunk, separate from the policy or sharing its trunk.

Invariant: ``values[b, t]`` is the value of the state in which token ``t`` is
generated, read from the trunk's hidden state at ``t - 1`` (the same position the
policy's log-prob of token ``t`` is read from); position 0 has value 0. A separate
critic starts as a copy of the policy's trunk with a zero-initialised head, so its
first predictions are 0 everywhere.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from turnrl.config.algo import CriticConfig
from turnrl.models.forward import hidden_states


def _hidden_size(model) -> int:
    return model.get_output_embeddings().weight.shape[1]


class _Trunk(nn.Module):
    """Adapter so a causal LM (or its copy) can be used through ``hidden_states``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_decoder(self):
        return self.model.get_decoder()


class Critic(nn.Module):
    def __init__(self, policy_model, config: CriticConfig):
        super().__init__()
        self.config = config
        self.shared = config.kind == "head"
        trunk_model = policy_model if self.shared else copy.deepcopy(policy_model)
        # a shared trunk is not registered as a submodule: it belongs to (and is saved with) the policy
        if self.shared:
            object.__setattr__(self, "trunk", _Trunk(trunk_model))
        else:
            self.trunk = _Trunk(trunk_model)
        self.head = nn.Linear(_hidden_size(policy_model), 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def own_parameters(self) -> list[nn.Parameter]:
        """Parameters the critic's own optimizer updates (the head, plus the trunk when separate)."""
        params = list(self.head.parameters())
        if not self.shared:
            params += list(self.trunk.model.get_decoder().parameters())
        return params

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden_states(self.trunk, input_ids, attention_mask)
        v = self.head(hidden.float()).squeeze(-1)  # value of the state after token t
        out = torch.zeros_like(v)
        out[:, 1:] = v[:, :-1]
        return out
