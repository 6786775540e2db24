"""Continuous batching over a transformers causal LM: sequences join and leave a running batch between steps.

Invariants:
- the running batch is one left-padded KV cache per layer (``[rows, kv_heads, width, head_dim]``) with a 2-D
  attention mask that is 1 exactly on each row's real tokens and position ids counted over real tokens only;
  rows join (their prefill is left-padded to the common width) and leave (rows dropped, all-padding columns
  trimmed) only between forwards, so who else is in the batch never changes a row's result;
- prefix reuse: a new request that names a session whose cached keys/values (``KVStore``, same weight version)
  cover a prefix of its input is prefilled on the rest only, the cached part placed in front of it; requests
  admitted together with the same uncached input (a group's shared prompt) are prefilled once and their caches
  copied; neither changes a result, only what is computed;
- every sampled token's log-prob is ``log_softmax(logits / T)[token]`` in fp32 from the forward that sampled it
  (restricted to the allowed tokens for a constrained request; see ``sampling``); its weight version is the
  version of the weights that forward ran under;
- a running row always holds exactly one sampled token not yet in its cache (``out_ids[-1]``); a sequence that is
  re-admitted (after a weight update) is prefilled on its whole context ``input_ids + out_ids`` and keeps the
  tokens it already has; a row that leaves stores its cache for its session, if it names one.

``step`` is the only method that touches the model; callers run it off their event loop, one at a time.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from turnrl.engine.generation.kv_layout import Layers, build_cache, cache_kwarg, cache_layers, output_cache
from turnrl.engine.generation.kv_store import KVStore, SessionKV
from turnrl.engine.generation.sampling import constrain_logits, sample_tokens
from turnrl.models.constraints import allowed_next
from turnrl.protocol import GenerateRequest, GenerateResult


@dataclass(eq=False)  # identity: two requests are never the same sequence
class Sequence:
    key: Hashable
    request: GenerateRequest
    out_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    finish: str | None = None

    @property
    def max_new(self) -> int:
        r = self.request
        # a constrained request may always run to the end of its longest completion
        return max(r.sampling.max_new_tokens, max(map(len, r.allowed))) if r.allowed else r.sampling.max_new_tokens

    def result(self) -> GenerateResult:
        return GenerateResult(
            request_id=self.request.request_id,
            output_ids=list(self.out_ids),
            logprobs=list(self.logprobs),
            versions=list(self.versions),
            finish_reason=self.finish or "length",
        )


@dataclass
class _Prefill:
    """One row of a prefill forward: the cached prefix it starts from and the tokens it computes."""

    entry: SessionKV | None
    fresh: list[int]

    @property
    def cached(self) -> int:
        return self.entry.num_tokens if self.entry is not None else 0


class ContinuousBatcher:
    def __init__(
        self, model, pad_token_id: int, generator: torch.Generator | None = None, store: KVStore | None = None
    ):
        self.model = model
        self.pad_token_id = pad_token_id
        self.generator = generator
        self.store = store
        self.version = 0
        self.device = next(model.parameters()).device
        self._cache_key = cache_kwarg(model)
        self.rows: list[Sequence] = []
        self._layers: Layers = []
        self._attention = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self._positions = torch.zeros((0,), dtype=torch.long, device=self.device)
        self.steps = 0
        self.tokens = 0
        self.prefill_tokens = 0
        self.reused_tokens = 0
        self.shared_prefill_tokens = 0
        self.prefix_lookups = 0
        self.prefix_hits = 0

    @property
    def width(self) -> int:
        return self._attention.shape[1]

    def set_version(self, version: int) -> None:
        """The weights changed: tokens sampled from now on carry ``version``; cached sessions are stale."""
        self.version = version
        if self.store is not None:
            self.store.clear()

    @torch.inference_mode()
    def step(self, admit: list[Sequence], remove: dict[Hashable, str], decode: bool = True) -> list[Sequence]:
        """Drop ``remove`` (key -> finish reason), prefill ``admit``, then decode one token for every row.

        Returns the sequences that finished during this step (removed ones included)."""
        finished = self._remove(remove)
        if admit:
            finished += self._prefill(admit)
        if decode and self.rows:
            finished += self._decode()
        return finished

    def reset(self) -> list[Sequence]:
        """Forget every row's cache; the sequences are returned (in row order) to be re-admitted or ended."""
        rows, self.rows = self.rows, []
        self._layers = []
        self._attention = self._attention.new_zeros((0, 0))
        self._positions = self._positions.new_zeros((0,))
        return rows

    # ---- leaving ----------------------------------------------------------------------------------------------
    def _remove(self, remove: dict[Hashable, str]) -> list[Sequence]:
        drop = [i for i, s in enumerate(self.rows) if s.key in remove]
        for i in drop:
            self.rows[i].finish = remove[self.rows[i].key]
        return self._drop(drop)

    def _drop(self, drop: list[int]) -> list[Sequence]:
        if not drop:
            return []
        self._remember(drop)
        gone = set(drop)
        left = [s for i, s in enumerate(self.rows) if i not in gone]
        out = [self.rows[i] for i in drop]
        if not left:
            self.reset()
            return out
        keep = torch.tensor([i for i in range(len(self.rows)) if i not in gone], device=self.device)
        attention = self._attention.index_select(0, keep)
        start = int(attention.any(0).long().argmax())  # first column some remaining row uses
        self._attention = attention[:, start:]
        self._positions = self._positions.index_select(0, keep)
        self._layers = [
            (k.index_select(0, keep)[:, :, start:], v.index_select(0, keep)[:, :, start:]) for k, v in self._layers
        ]
        self.rows = left
        return out

    def _remember(self, rows: list[int]) -> None:
        """Store the keys/values of each leaving row's real tokens for its session (its context minus the
        last sampled token, which was never fed)."""
        if self.store is None:
            return
        for i in rows:
            seq = self.rows[i]
            if seq.request.session_id is None:
                continue
            real = self._attention[i].nonzero().squeeze(-1)
            ids = (list(seq.request.input_ids) + seq.out_ids)[: real.numel()]
            layers = [(k[i][:, real].clone(), v[i][:, real].clone()) for k, v in self._layers]
            self.store.put(seq.request.session_id, SessionKV(ids=ids, layers=layers, version=self.version))

    # ---- joining ----------------------------------------------------------------------------------------------
    def _plan(self, seq: Sequence) -> _Prefill:
        context = list(seq.request.input_ids) + seq.out_ids
        entry = None
        if self.store is not None and seq.request.session_id is not None and not seq.out_ids:
            self.prefix_lookups += 1
            entry = self.store.reusable(seq.request.session_id, context, self.version)
            if entry is not None:
                self.prefix_hits += 1
                self.reused_tokens += entry.num_tokens
        return _Prefill(entry, context[entry.num_tokens :] if entry is not None else context)

    def _prefill(self, seqs: list[Sequence]) -> list[Sequence]:
        unique: list[_Prefill] = []
        row_of: list[int] = []
        shared: dict[tuple[int, ...], int] = {}
        for seq in seqs:
            plan = self._plan(seq)
            key = tuple(plan.fresh)
            if plan.entry is None and key in shared:  # same prompt, nothing cached: computed once
                row_of.append(shared[key])
                self.shared_prefill_tokens += len(plan.fresh)
                continue
            if plan.entry is None:
                shared[key] = len(unique)
            row_of.append(len(unique))
            unique.append(plan)
        width_cached = max(p.cached for p in unique)
        width_new = max(len(p.fresh) for p in unique)
        ids = torch.full((len(unique), width_new), self.pad_token_id, dtype=torch.long)
        positions = torch.zeros((len(unique), width_new), dtype=torch.long)
        attention = torch.zeros((len(unique), width_cached + width_new), dtype=torch.long)
        for row, plan in enumerate(unique):
            c, n = plan.cached, len(plan.fresh)
            ids[row, width_new - n :] = torch.tensor(plan.fresh, dtype=torch.long)
            positions[row, width_new - n :] = torch.arange(c, c + n)
            attention[row, width_cached - c : width_cached] = 1
            attention[row, width_cached + width_new - n :] = 1
        ids, attention, positions = ids.to(self.device), attention.to(self.device), positions.to(self.device)
        past = {self._cache_key: self._reused_cache(unique, width_cached)} if width_cached else {}
        output = self.model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True, **past)
        self.prefill_tokens += sum(len(p.fresh) for p in unique)
        index = torch.tensor(row_of, device=self.device)
        layers = [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache_layers(output_cache(output))]
        finished = self._sample_into(seqs, output.logits[:, -1].index_select(0, index))
        first = len(self.rows)
        self._join(seqs, layers, attention.index_select(0, index), positions[:, -1].index_select(0, index) + 1)
        self._drop([first + i for i, s in enumerate(seqs) if s.finish is not None])
        return finished

    def _reused_cache(self, plans: list[_Prefill], width: int):
        """Left-padded ``[rows, kv_heads, width, head_dim]`` keys/values per layer from the reused entries."""
        template = next(p.entry for p in plans if p.entry is not None)
        layers = []
        for index, (k0, v0) in enumerate(template.layers):
            keys = k0.new_zeros((len(plans), k0.shape[0], width, k0.shape[2]))
            values = v0.new_zeros((len(plans), v0.shape[0], width, v0.shape[2]))
            for row, plan in enumerate(plans):
                if plan.entry is not None:
                    k, v = plan.entry.layers[index]
                    keys[row, :, width - k.shape[1] :] = k
                    values[row, :, width - v.shape[1] :] = v
            layers.append((keys.to(self.device), values.to(self.device)))
        return build_cache(layers)

    def _join(self, seqs, layers: Layers, attention: torch.Tensor, positions: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self._layers, self._attention, self._positions = list(seqs), layers, attention, positions
            return
        width = max(self.width, attention.shape[1])
        old_pad, new_pad = width - self.width, width - attention.shape[1]
        self._layers = [
            (
                torch.cat([F.pad(k0, (0, 0, old_pad, 0)), F.pad(k1, (0, 0, new_pad, 0))]),
                torch.cat([F.pad(v0, (0, 0, old_pad, 0)), F.pad(v1, (0, 0, new_pad, 0))]),
            )
            for (k0, v0), (k1, v1) in zip(self._layers, layers, strict=True)
        ]
        self._attention = torch.cat([F.pad(self._attention, (old_pad, 0)), F.pad(attention, (new_pad, 0))])
        self._positions = torch.cat([self._positions, positions])
        self.rows.extend(seqs)

    # ---- decoding ---------------------------------------------------------------------------------------------
    def _decode(self) -> list[Sequence]:
        pending = torch.tensor([s.out_ids[-1] for s in self.rows], dtype=torch.long, device=self.device)
        attention = F.pad(self._attention, (0, 1), value=1)
        output = self.model(
            input_ids=pending[:, None],
            attention_mask=attention,
            position_ids=self._positions[:, None],
            use_cache=True,
            **{self._cache_key: build_cache(self._layers)},
        )
        self._layers = cache_layers(output_cache(output))
        self._attention = attention
        self._positions = self._positions + 1
        finished = self._sample_into(self.rows, output.logits[:, -1])
        return self._drop([i for i, s in enumerate(self.rows) if s.finish is not None]) if finished else []

    def _sample_into(self, seqs: list[Sequence], logits: torch.Tensor) -> list[Sequence]:
        requests = [s.request for s in seqs]
        if any(r.allowed is not None for r in requests):
            logits = constrain_logits(logits, requests, [s.out_ids for s in seqs])
        temperature = torch.tensor([r.sampling.temperature for r in requests], device=self.device)
        top_p = torch.tensor([r.sampling.top_p for r in requests], device=self.device)
        tokens, logps = sample_tokens(logits, temperature, top_p, self.generator)
        self.steps += 1
        self.tokens += len(seqs)
        finished = []
        for seq, token, logp in zip(seqs, tokens.tolist(), logps.tolist(), strict=True):
            seq.out_ids.append(token)
            seq.logprobs.append(logp)
            seq.versions.append(self.version)
            allowed = seq.request.allowed
            if token in seq.request.sampling.stop_token_ids or (
                allowed is not None and not allowed_next(allowed, seq.out_ids)
            ):
                seq.finish = "stop"
            elif len(seq.out_ids) >= seq.max_new:
                seq.finish = "length"
            if seq.finish is not None:
                finished.append(seq)
        return finished
