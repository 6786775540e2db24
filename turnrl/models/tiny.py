"""The embedded default policy: a small Qwen2-architecture causal LM built from a config.

Invariant: built locally, never downloaded; saved with ``save_pretrained`` so it
loads back like any Hugging Face model directory (``--model PATH``).
"""

from __future__ import annotations

import re

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from turnrl.models.induction_init import induction_circuit_init

TINY_PRESETS: dict[str, dict[str, int]] = {
    # Shallow and wide on purpose: from scratch, two layers learn token-to-action associations
    # several times faster than four (measured on this task family), and cost half as much.
    "tiny": dict(
        hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=768
    ),
    "deep": dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, intermediate_size=768
    ),
    "micro": dict(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=384
    ),
}


def build_tiny_model(
    tokenizer,
    preset: str = "tiny",
    max_positions: int = 4096,
    seed: int = 0,
    copy_init_scale: float = 3.0,
    copy_init_layer: int = 0,
    word_share: float = 0.0,
    induction_init: bool = False,
) -> Qwen2ForCausalLM:
    """``induction_init``: layers 0-1 start as an induction circuit (``models.induction_init``) in place of the
    copy head (``copy_init_layer``/``copy_init_scale`` are then unused)."""
    if preset not in TINY_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose from: {', '.join(TINY_PRESETS)}")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
        **TINY_PRESETS[preset],
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if not 0 <= copy_init_layer < config.num_hidden_layers:
        raise ValueError(f"copy_init_layer must be in [0, {config.num_hidden_layers}), got {copy_init_layer}")
    if copy_init_scale and not induction_init:
        copy_friendly_init(model, layer=copy_init_layer, scale=copy_init_scale)
    if word_share:
        word_bag_init(model, tokenizer, share=word_share, seed=seed)
    if induction_init:  # last: it projects the embeddings out of the circuit's own subspace
        induction_circuit_init(model, seed=seed)
    return model


_WORD = re.compile(r"[a-z]+|[0-9]+")


def token_words(text: str) -> list[str]:
    """The words a token's text spells: runs of letters or of digits, lower-cased."""
    return _WORD.findall(text.lower())


def word_bag_init(model, tokenizer, share: float, seed: int = 0) -> None:
    """Start each token's embedding as a mix of the vectors of the words it spells and its own random vector.

    A generic inductive bias standing in for what pretraining gives a language model: with
    phrase tokens ("go to the red key", "go to red key 1") two tokens that spell the same
    words start near each other, so with tied embeddings a model that attends to one can
    raise the other's logit. Each distinct word gets one random vector; a token's embedding
    is ``sqrt(share)`` times the normalised sum of its words' vectors plus ``sqrt(1 - share)``
    times its own, at the embedding's initial scale. Tokens that spell no word (punctuation,
    line breaks, single spaces) keep their start; the chat's special tokens are read like any
    other (``<|im_end|>`` spells "im" and "end"). It carries no knowledge of any task: which
    words matter is still learned.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"word share must be in (0, 1], got {share}")
    embedding = model.get_input_embeddings().weight
    vocab, width = embedding.shape
    generator = torch.Generator().manual_seed(seed + 1)
    std = model.config.initializer_range
    word_vectors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for token_id in range(min(vocab, len(tokenizer))):
            words = token_words(tokenizer.decode([token_id]))
            if not words:
                continue
            for word in words:
                if word not in word_vectors:
                    word_vectors[word] = torch.randn(width, generator=generator)
            bag = torch.stack([word_vectors[w] for w in words]).sum(0) / len(words) ** 0.5
            own = torch.randn(width, generator=generator)
            embedding[token_id] = std * (share**0.5 * bag + (1.0 - share) ** 0.5 * own)


def copy_friendly_init(model, layer: int = 0, scale: float = 3.0) -> None:
    """Start one attention layer with ``W_o @ W_v`` a scaled orthogonal identity.

    A generic inductive bias (in the spirit of mimetic initialisation of attention):
    what a head attends to is passed on unchanged, so with tied embeddings the model
    can from the start raise the logits of tokens present in its context. It carries
    no knowledge of any task; which tokens to attend to is still learned.
    """
    attn = model.model.layers[layer].self_attn
    hidden = attn.o_proj.weight.shape[0]
    values = attn.v_proj.weight.shape[0]
    if values != hidden:
        raise ValueError("copy-friendly init needs as many key/value heads as query heads")
    basis, _ = torch.linalg.qr(torch.randn(hidden, hidden))
    with torch.no_grad():
        attn.v_proj.weight.copy_(basis * scale)
        attn.o_proj.weight.copy_(basis.t() * scale)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
