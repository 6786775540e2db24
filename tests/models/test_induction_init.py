"""The induction-circuit start: a span seen earlier is continued from the start, by a circuit built as described."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from turnrl.engine.training.copy_rehearsal import plain_token_ids, repeated_span_batch
from turnrl.models.forward import hidden_states
from turnrl.models.induction_init import induction_circuit_init
from turnrl.models.tiny import build_tiny_model


def _continued_share(model, ids, mask) -> float:
    """The share of the marked tokens that the model's greedy next-token choice gets right."""
    with torch.no_grad():
        hidden = hidden_states(model, ids, torch.ones_like(ids))
        predicted = (hidden[:, :-1] @ model.get_output_embeddings().weight.T).argmax(-1)
    return float((predicted == ids[:, 1:])[mask[:, 1:]].float().mean())


def test_repeated_random_spans_are_continued_from_the_start(tokenizer):
    ids, mask = repeated_span_batch(random.Random(11), plain_token_ids(tokenizer), rows=12)
    default = build_tiny_model(tokenizer, "tiny", max_positions=256, seed=4).eval()
    circuit = build_tiny_model(tokenizer, "tiny", max_positions=256, seed=4, induction_init=True).eval()
    assert _continued_share(default, ids, mask) < 0.1
    assert _continued_share(circuit, ids, mask) > 0.8


def test_layer_zero_head_zero_attends_to_the_previous_position(tokenizer):
    model = build_tiny_model(tokenizer, "tiny", max_positions=256, seed=1, induction_init=True).eval()
    model.config._attn_implementation = "eager"  # so that the attention weights come back
    ids = torch.tensor([random.Random(2).choices(plain_token_ids(tokenizer), k=97)])
    with torch.no_grad():
        attentions = model(input_ids=ids, output_attentions=True).attentions[0][0, 0]  # layer 0, head 0: [T, T]
    assert attentions[1:].argmax(-1).tolist() == list(range(96))
    assert float(attentions[1:].max(-1).values.min()) > 0.9


def test_the_previous_token_write_lies_outside_every_embedding(tokenizer):
    model = build_tiny_model(tokenizer, "tiny", max_positions=64, seed=3, word_share=0.5, induction_init=True)
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    first = model.model.layers[0]
    write = first.self_attn.o_proj.weight[:, :head_dim]
    embeddings = model.get_input_embeddings().weight
    scale = float(embeddings.norm(dim=1).max() * write.norm(dim=0).max())
    assert float((embeddings @ write).abs().max()) < 1e-5 * scale  # float32 rounding; a random pair: ~0.1
    assert float(first.self_attn.o_proj.weight[:, head_dim:].abs().max()) == 0.0  # the other heads: silent
    for layer in model.model.layers[:2]:
        assert float(layer.mlp.down_proj.weight.abs().max()) == 0.0


def test_the_start_is_deterministic_for_a_seed(tokenizer):
    one, two = (build_tiny_model(tokenizer, "tiny", max_positions=64, seed=8, induction_init=True) for _ in range(2))
    other = build_tiny_model(tokenizer, "tiny", max_positions=64, seed=9, induction_init=True)
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values(), strict=True))
    assert not torch.equal(one.model.layers[1].self_attn.q_proj.weight, other.model.layers[1].self_attn.q_proj.weight)


def _model(**overrides) -> Qwen2ForCausalLM:
    shape = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=64, intermediate_size=64, **{**shape, **overrides}))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(num_hidden_layers=1), "at least 2 layers"),
        (dict(num_key_value_heads=2), "as many key/value heads"),
        (dict(num_attention_heads=2, num_key_value_heads=2), "at least 3 heads' width"),
    ],
)
def test_a_model_the_circuit_does_not_fit_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        induction_circuit_init(_model(**overrides))
    with pytest.raises(ValueError, match=r"slow_pairs must be in \[1, 16\]"):
        induction_circuit_init(_model(), slow_pairs=0)
