"""An induction-circuit start for the embedded model: after a token seen before, predict what followed it.

A generic inductive bias that stands in for what pretraining gives a language model: the ability to
continue a span it has seen earlier in its context, such as a name never met in training that an
observation lists and a reply must spell out. It holds no knowledge of any task: what follows what is
read from the context at run time, and which spans to copy is still learned.

The circuit uses the first two layers:
- **Layer 0, head 0** attends to the previous position through rotary phase alone. Its query and key
  come from biases, not from the token. It writes a head-wide projection of that previous token
  into a subspace ``B`` of the residual stream, which the embeddings are projected out of. The layer's
  other heads and its MLP start at zero output.
- **Every head of layer 1** compares the current token with the previous-token write at each earlier
  position. The comparison runs on the slowest rotary pairs only, where position barely turns it. Each
  head copies the token of the best match: its value/output is the identity on the embeddings'
  subspace. The layer's MLP starts at zero output.

Invariants:
- The embeddings have no component in ``B``. Layer 0's write never moves a logit, since the head is
  tied, and never blurs the token a position holds.
- A model without at least two layers, with fewer key/value heads than query heads, or with too narrow
  a residual for ``B`` beside the embeddings is refused with a ``ValueError``.
- Deterministic for a seed.
"""

from __future__ import annotations

import math

import torch


def _orthonormal_columns(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator))
    return q


def _rope_theta(config) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = config.rope_parameters["rope_theta"]
    return float(theta)


@torch.no_grad()
def induction_circuit_init(
    model,
    seed: int = 0,
    match_scale: float = 3.0,
    copy_scale: float = 3.0,
    slow_pairs: int = 12,
    position_sharpness: float = 10.0,
) -> None:
    """Rewrite ``model`` (a Qwen2-style causal LM) so that layers 0-1 start as an induction circuit.

    ``match_scale`` sharpens layer 1's match, ``copy_scale`` sets how far a copied token's logit
    rises, ``slow_pairs`` is the number of slowest rotary pairs layer 1 matches on, and
    ``position_sharpness`` is the query/key bias that pins layer 0's head 0 to the previous position."""
    config = model.config
    width, heads = config.hidden_size, config.num_attention_heads
    head_dim = width // heads
    half = head_dim // 2
    if config.num_hidden_layers < 2:
        raise ValueError(f"an induction circuit needs at least 2 layers, the model has {config.num_hidden_layers}")
    if config.num_key_value_heads != heads:
        raise ValueError("an induction circuit needs as many key/value heads as query heads")
    if width < 3 * head_dim:
        raise ValueError(f"an induction circuit needs a residual of at least 3 heads' width, got {width}")
    if not 1 <= slow_pairs <= half:
        raise ValueError(f"slow_pairs must be in [1, {half}], got {slow_pairs}")
    generator = torch.Generator().manual_seed(seed + 2)
    basis = _orthonormal_columns(width, width, generator)
    reserved, kept = basis[:, :head_dim], basis[:, head_dim:]  # B, and where the embeddings live
    embedding = model.get_input_embeddings().weight
    embedding.copy_(embedding @ kept @ kept.T)
    token_norm = float(embedding.norm(dim=1).mean())

    first, second = model.model.layers[0], model.model.layers[1]
    attn0, attn1 = first.self_attn, second.self_attn
    # layer 0, head 0: q.k peaks where the key's position is one before the query's (HF's rotate-half rotary)
    freqs = _rope_theta(config) ** (-torch.arange(half, dtype=torch.float32) * 2 / head_dim)
    query = torch.zeros(head_dim)
    query[:half] = position_sharpness
    key = torch.cat([position_sharpness * torch.cos(freqs), position_sharpness * torch.sin(freqs)])
    attn0.q_proj.weight[:head_dim] = 0.0
    attn0.q_proj.bias[:head_dim] = query
    attn0.k_proj.weight[:head_dim] = 0.0
    attn0.k_proj.bias[:head_dim] = key
    reads = kept @ _orthonormal_columns(width - head_dim, head_dim, generator)  # [width, head_dim] within kept
    attn0.v_proj.weight[:head_dim] = reads.T
    attn0.v_proj.bias[:head_dim] = 0.0
    attn0.o_proj.weight.zero_()
    attn0.o_proj.weight[:, :head_dim] = reserved * (token_norm / math.sqrt(head_dim))  # at the embeddings' scale
    first.mlp.down_proj.weight.zero_()

    # layer 1: match the current token's projection against the previous-token write, on the slowest pairs
    slow = torch.arange(half - slow_pairs, half)
    dims = torch.cat([slow, slow + half])
    for proj in (attn1.q_proj, attn1.k_proj):
        proj.weight.zero_()
        proj.bias.zero_()
    for head in range(heads):
        mix = _orthonormal_columns(head_dim, 2 * slow_pairs, generator).T  # [2 * slow_pairs, head_dim]
        attn1.q_proj.weight[head * head_dim + dims] = match_scale * (mix @ reads.T)
        attn1.k_proj.weight[head * head_dim + dims] = mix @ reserved.T
    values = torch.zeros(width, width)
    values[: width - head_dim] = kept.T
    attn1.v_proj.weight.copy_(values)
    attn1.v_proj.bias.zero_()
    attn1.o_proj.weight.copy_(values.T * copy_scale)
    second.mlp.down_proj.weight.zero_()
