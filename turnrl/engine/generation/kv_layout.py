"""Keys/values of a transformers causal LM as plain per-layer tensors, whatever cache class the version uses.

Invariant: ``cache_layers(build_cache(layers))`` is ``layers`` (``[rows, kv_heads, width, head_dim]`` per layer);
the model is called with its own name for the cache argument.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

Layers = list[tuple[torch.Tensor, torch.Tensor]]


def cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(output):
    return output["cache"] if "cache" in output else output["past_key_values"]


def cache_layers(cache) -> Layers:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def build_cache(layers: Layers) -> DynamicCache:
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache
