"""A saved policy loads back identical: same tokenization, same chat prompt, same logits."""

from __future__ import annotations

import torch

from turnrl.models.chat import ChatFormat
from turnrl.models.loading import load_policy, save_policy


def test_saved_policy_loads_back_identical(tiny_model, tokenizer, babyai_corpus, tmp_path):
    save_policy(tiny_model, tokenizer, tmp_path / "policy")
    model, loaded = load_policy(tmp_path / "policy")
    for text in babyai_corpus[:20]:
        assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
    assert ChatFormat(loaded).prompt_ids("sys", babyai_corpus[0]) == ChatFormat(tokenizer).prompt_ids(
        "sys", babyai_corpus[0]
    )
    ids = torch.tensor([tokenizer.encode(babyai_corpus[1], add_special_tokens=False)[:40]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, tiny_model(ids).logits)
