"""The embedded model's copy-friendly start: one chosen attention layer passes what it attends to on unchanged."""

from __future__ import annotations

import pytest
import torch

from turnrl.config.model import DefaultModelConfig
from turnrl.models.tiny import TINY_PRESETS, build_tiny_model


@pytest.mark.parametrize(("preset", "layer"), [("tiny", 0), ("tiny", 1), ("micro", 1), ("deep", 0), ("deep", 3)])
def test_the_chosen_layer_starts_as_a_scaled_identity(tokenizer, preset, layer):
    model = build_tiny_model(tokenizer, preset, max_positions=64, seed=5, copy_init_scale=2.0, copy_init_layer=layer)
    for index, block in enumerate(model.model.layers):
        attn = block.self_attn
        product = attn.o_proj.weight @ attn.v_proj.weight  # what the layer adds for one attended position
        identity = torch.eye(product.shape[0]) * 4.0  # scale ** 2
        assert torch.allclose(product, identity, atol=1e-4) == (index == layer)


def test_a_layer_the_model_lacks_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"copy_init_layer must be in \[0, 2\)"):
        build_tiny_model(tokenizer, "tiny", max_positions=64, copy_init_layer=2)
    with pytest.raises(ValueError, match="copy_init_layer must be >= 0"):
        DefaultModelConfig(copy_init_layer=-1)


@pytest.mark.parametrize("preset", sorted(TINY_PRESETS))
def test_every_preset_builds_with_the_default_copy_head(tokenizer, preset):
    model = build_tiny_model(tokenizer, preset, max_positions=64)
    logits = model(torch.tensor([[3, 4, 5]])).logits
    assert logits.shape == (1, 3, len(tokenizer)) and torch.isfinite(logits).all()
