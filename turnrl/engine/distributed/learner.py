"""The learner sharded with FSDP2: every rank holds the whole batch and trains on its share of the rows.

Invariants:
- the losses and their normalisation are the single-process learner's (token-mean over the global
  mini-batch, never per rank): each rank's micro-batch losses are divided by the mini-batch's global token
  count, and FSDP sums (does not average) the gradients across ranks, so one update equals the single-process
  update on the same batch;
- rows are split across ranks by token count (``partition.balanced_parts``), then into micro-batches of at
  most ``micro_batch_tokens`` as in one process; a rank with fewer micro-batches runs passes whose loss counts
  zero, so every rank takes part in every collective (FSDP's all-gathers and reduce-scatters) in the same order;
- the policy, the reference and a separate critic are each a root FSDP module over one 1-D mesh, with every
  decoder layer its own unit; the parameters start equal on every rank (broadcast from rank 0);
- statistics (loss, entropy, clip fraction, ...) are summed over ranks, so they read as in one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from turnrl.config.algo import CriticConfig, LearnerConfig
from turnrl.config.distributed import ShardingConfig
from turnrl.engine.distributed.partition import balanced_parts
from turnrl.engine.training.batch import TokenBatch, micro_batches
from turnrl.engine.training.learner import Learner
from turnrl.models.forward import token_logprobs


class _Logprobs(nn.Module):
    """A causal LM whose forward is ``token_logprobs``: the root FSDP unit gathers the output layer with it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, loss_mask, constraints, temperature):
        return token_logprobs(self.model, input_ids, attention_mask, loss_mask, temperature, 2048, *constraints)


def _decoder_layers(model: nn.Module) -> list[nn.Module]:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"cannot shard {type(model).__name__}: no decoder layers (model.get_decoder().layers)")
    return list(layers)


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def shard_module(root: nn.Module, layers: list[nn.Module], mesh, config: ShardingConfig) -> nn.Module:
    """Each layer its own FSDP unit, then ``root`` (everything else); gradients summed across ranks."""
    kwargs = {"mesh": mesh, "reshard_after_forward": config.reshard_after_forward}
    if config.param_dtype != "float32" or config.reduce_dtype != "float32":
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=_dtype(config.param_dtype), reduce_dtype=_dtype(config.reduce_dtype)
        )
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(root, **kwargs)
    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return root


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Every parameter and buffer of ``module`` made equal to rank ``src``'s."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


class ShardedLearner(Learner):
    """``Learner`` over an FSDP2 mesh; build it on every rank with the same arguments (and the same batches)."""

    def __init__(
        self,
        model,
        config: LearnerConfig,
        pad_token_id: int,
        seed: int = 0,
        *,
        mesh,
        sharding: ShardingConfig | None = None,
        critic: CriticConfig | None = None,
        **kwargs,
    ):
        if critic is not None and critic.kind == "head":
            raise ValueError(
                "a sharded learner needs critic.kind = 'separate' (a value head on the sharded policy "
                "trunk is not supported)"
            )
        self.mesh = mesh
        self.sharding = sharding or ShardingConfig()
        self.rank = mesh.get_local_rank()
        self.world = mesh.size()
        broadcast_module(model)
        super().__init__(model, config, pad_token_id, seed, critic=critic, **kwargs)
        if self.critic is not None and self.critic.shared:  # the estimator's default critic
            raise ValueError("a sharded learner needs critic.kind = 'separate'")
        if self.sharding.activation_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._policy = shard_module(_Logprobs(model), _decoder_layers(model), mesh, self.sharding)
        self._reference = None
        if self.reference is not None:
            self._reference = shard_module(
                _Logprobs(self.reference), _decoder_layers(self.reference), mesh, self.sharding
            )
        if self.critic is not None:
            broadcast_module(self.critic.head)
            shard_module(self.critic, _decoder_layers(self.critic.trunk.model), mesh, self.sharding)
            register_fsdp_forward_method(self.critic, "values")
        self._build_optimizers()  # over the sharded parameters

    # ---- the overrides ------------------------------------------------------------------------
    def _row_groups(self, lengths: list[int]) -> list[list[int] | None]:
        mine = balanced_parts(lengths, self.world)[self.rank]
        groups = [
            [mine[i] for i in g] for g in micro_batches([lengths[i] for i in mine], self.config.micro_batch_tokens)
        ]
        count = torch.tensor([len(groups)], dtype=torch.long)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return groups + [None] * (int(count) - len(groups))

    def _logprobs(self, which: str, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        module = self._policy if which == "policy" else self._reference
        logp, entropy, on_list = module(
            batch.input_ids,
            batch.attention_mask,
            batch.loss_mask,
            (
                batch.constraint_index,
                batch.constraint_allowed,
                batch.constraint_set_target,
                self.config.off_list_log_prob,
            ),
            self.temperature,
        )
        return logp.float(), entropy.float(), None if on_list is None else on_list.float()

    def _combine_rows(self, out: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)  # each row was computed on exactly one rank; zeros elsewhere
        return out

    def _clip_grad_norm(self, params: list, max_norm: float) -> float:
        return float(full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm)))

    def _combine_sums(self, sums: dict[str, float]) -> dict[str, float]:
        keys = sorted(sums)
        values = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return dict(zip(keys, values.tolist(), strict=True))

    # ---- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        raise RuntimeError(
            "a sharded learner's state is saved with turnrl.engine.distributed.checkpoint.save_sharded (DCP)"
        )

    def full_state_dict(self, keep: bool = True) -> dict[str, torch.Tensor]:
        """The policy's full parameters and buffers (a collective: call it on every rank). ``keep=False`` takes
        part in the gathers but keeps nothing (a rank that does not publish weights): returns {}."""
        out = {}
        for name, t in self.model.state_dict().items():
            whole = full_tensor(t).detach().cpu()  # one tensor at a time: peak memory is one gathered tensor
            if keep:
                out[name] = whole
        return out
