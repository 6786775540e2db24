"""Batched sampling with a transformers causal LM, its KV cache, and per-session prefix reuse.

Invariant: for every sampled token the returned log-prob is
``log_softmax(logits / T)[token]`` (``T = 1`` for greedy), in fp32, from the
forward pass that sampled it, so recomputing the finished sequence under the
same weights reproduces it. Rows are laid out as ``[pad][reused KV][pad][new
tokens][decoded tokens]`` with a 2-D attention mask that is 1 exactly on real
tokens and position ids counted over real tokens only, so padding and reuse
never change a result. A request with ``allowed`` completions samples, at each
step, only among the tokens that keep the output on one of them (see
``constraints``), and its log-probs are those of that renormalised distribution.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

from turnrl.engine.constraints import allowed_next, check_completions
from turnrl.engine.kv_store import KVStore, SessionKV
from turnrl.protocol import GenerateRequest, GenerateResult


def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(output):
    return output["cache"] if "cache" in output else output["past_key_values"]


def _cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def _build_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def _sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, generator) -> tuple:
    """One token per row and its log-prob under the temperature-scaled (unfiltered) distribution."""
    greedy = temperature <= 0
    scale = torch.where(greedy, torch.ones_like(temperature), temperature)
    logp = torch.log_softmax(logits.float() / scale[:, None], dim=-1)
    probs = logp.exp()
    if bool((top_p < 1).any()):
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < top_p[:, None]
        filtered = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
        probs = filtered / filtered.sum(-1, keepdim=True)
    sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    tokens = torch.where(greedy, logits.argmax(-1), sampled)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _reused_cache(entries: list[SessionKV | None], width: int, batch: int):
    """Left-padded [B, heads, width, dim] keys/values per layer from the reused entries."""
    template = next(e for e in entries if e is not None)
    layers = []
    for index, (k0, v0) in enumerate(template.layers):
        keys = k0.new_zeros((batch, k0.shape[0], width, k0.shape[2]))
        values = v0.new_zeros((batch, v0.shape[0], width, v0.shape[2]))
        for row, entry in enumerate(entries):
            if entry is not None:
                k, v = entry.layers[index]
                keys[row, :, width - k.shape[1]:] = k
                values[row, :, width - v.shape[1]:] = v
        layers.append((keys, values))
    return _build_cache(layers)


@torch.inference_mode()
def generate_batch(
    model,
    requests: list[GenerateRequest],
    weight_version: int,
    pad_token_id: int,
    generator: torch.Generator | None = None,
    store: KVStore | None = None,
) -> list[GenerateResult]:
    """Prefill the new part of every prompt, then decode with the KV cache until every request stops."""
    if not requests:
        return []
    if any(len(r.input_ids) == 0 for r in requests):
        raise ValueError("empty input_ids")
    device = next(model.parameters()).device
    batch = len(requests)
    entries = [store.reusable(r.session_id, r.input_ids, weight_version) if store else None for r in requests]
    cached = [e.num_tokens if e is not None else 0 for e in entries]
    fresh = [r.input_ids[c:] for r, c in zip(requests, cached, strict=True)]
    width_cached, width_new = max(cached), max(len(f) for f in fresh)

    input_ids = torch.full((batch, width_new), pad_token_id, dtype=torch.long)
    positions = torch.zeros((batch, width_new), dtype=torch.long)
    attention = torch.zeros((batch, width_cached + width_new), dtype=torch.long)
    for row, (c, new) in enumerate(zip(cached, fresh, strict=True)):
        input_ids[row, width_new - len(new):] = torch.tensor(new, dtype=torch.long)
        positions[row, width_new - len(new):] = torch.arange(c, c + len(new))
        attention[row, width_cached - c:width_cached] = 1
        attention[row, width_cached + width_new - len(new):] = 1
    input_ids, positions, attention = input_ids.to(device), positions.to(device), attention.to(device)

    cache_key = _cache_kwarg(model)
    extra = {cache_key: _reused_cache(entries, width_cached, batch)} if width_cached else {}
    temperature = torch.tensor([r.sampling.temperature for r in requests], device=device)
    top_p = torch.tensor([r.sampling.top_p for r in requests], device=device)
    for r in requests:
        if r.allowed is not None:
            check_completions(r.allowed)
    # a constrained request may always run to the end of its longest completion
    max_new = [max(r.sampling.max_new_tokens, max(map(len, r.allowed))) if r.allowed else r.sampling.max_new_tokens
               for r in requests]
    stops = [set(r.sampling.stop_token_ids) for r in requests]
    out_ids: list[list[int]] = [[] for _ in requests]
    out_lp: list[list[float]] = [[] for _ in requests]
    finish: list[str | None] = ["length" if m <= 0 else None for m in max_new]

    result = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, **extra)
    next_pos = positions[:, -1] + 1
    while True:
        cache = _output_cache(result)
        logits = result.logits[:, -1]
        if any(r.allowed is not None for r in requests):
            logits = _constrain(logits, requests, out_ids)
        tokens, logps = _sample(logits, temperature, top_p, generator)
        fed = torch.zeros((batch, 1), dtype=attention.dtype, device=device)
        for row in range(batch):
            if finish[row] is not None:
                continue
            token = int(tokens[row])
            out_ids[row].append(token)
            out_lp[row].append(float(logps[row]))
            fed[row, 0] = 1
            constrained_done = requests[row].allowed is not None and not allowed_next(requests[row].allowed,
                                                                                        out_ids[row])
            if token in stops[row] or constrained_done:
                finish[row] = "stop"
            elif len(out_ids[row]) >= max_new[row]:
                finish[row] = "length"
        if all(f is not None for f in finish):
            break
        attention = torch.cat([attention, fed], dim=1)
        result = model(input_ids=tokens[:, None], attention_mask=attention, position_ids=next_pos[:, None],
                       use_cache=True, **{cache_key: cache})
        next_pos = next_pos + 1

    if store is not None:
        _remember(store, requests, out_ids, attention, cache, weight_version)
    return [
        GenerateResult(
            request_id=req.request_id,
            output_ids=out_ids[row],
            logprobs=out_lp[row],
            versions=[weight_version] * len(out_ids[row]),
            finish_reason=finish[row] or "length",
        )
        for row, req in enumerate(requests)
    ]


def _constrain(logits: torch.Tensor, requests, out_ids) -> torch.Tensor:
    masked = logits.clone()
    for row, req in enumerate(requests):
        if req.allowed is None:
            continue
        allowed = allowed_next(req.allowed, out_ids[row])
        keep = torch.full_like(masked[row], float("-inf"))
        if allowed:  # empty only for a finished row, whose sample is discarded
            index = torch.tensor(allowed, device=logits.device)
            keep[index] = masked[row, index]
        else:
            keep.zero_()
        masked[row] = keep
    return masked


def _remember(store: KVStore, requests, out_ids, attention: torch.Tensor, cache, version: int) -> None:
    """Keep each session's KV for the real tokens it now covers (prompt + fed outputs)."""
    layers = _cache_layers(cache)
    length = layers[0][0].shape[2]
    for row, req in enumerate(requests):
        if req.session_id is None:
            continue
        real = attention[row, :length].nonzero().squeeze(-1)
        ids = (list(req.input_ids) + out_ids[row])[: real.numel()]
        kv = [(k[row][:, real].clone(), v[row][:, real].clone()) for k, v in layers]
        store.put(req.session_id, SessionKV(ids=ids, layers=kv, version=version))
