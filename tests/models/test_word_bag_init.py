"""The embedded model's word-bag start: tokens that spell the same words start near each other."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch

from turnrl.config.model import DefaultModelConfig
from turnrl.models.tiny import build_tiny_model, token_words


def _rows(tokenizer, share):
    model = build_tiny_model(tokenizer, "micro", max_positions=64, seed=3, word_share=share)
    embedding = model.get_input_embeddings().weight.detach()
    assert model.get_output_embeddings().weight.data_ptr() == embedding.data_ptr()  # tied: the logits see it too
    return embedding


def _words(tokenizer):
    return {t: token_words(tokenizer.decode([t])) for t in range(len(tokenizer))}


def test_token_words_reads_letter_and_digit_runs():
    assert token_words(" go to Red key 12,") == ["go", "to", "red", "key", "12"]
    assert token_words('", ') == []
    assert token_words("ball1") == ["ball", "1"]


def test_with_the_whole_share_an_embedding_is_its_words_only(tokenizer):
    rows, words = _rows(tokenizer, 1.0), _words(tokenizer)
    by_bag: dict[tuple, list[int]] = {}
    for token, spelled in words.items():
        if spelled:
            by_bag.setdefault(tuple(sorted(Counter(spelled).items())), []).append(token)
    same = [ids for ids in by_bag.values() if len(ids) > 1]
    assert same, "the fixture's vocabulary should hold two tokens spelling the same words"
    for ids in same:
        for a, b in itertools.pairwise(ids):
            assert torch.allclose(rows[a], rows[b])
    # a single-word token is that word's vector; a two-word token is their sum over sqrt(2)
    single = {spelled[0]: rows[t] for t, spelled in words.items() if len(spelled) == 1}
    pairs = [(t, s) for t, s in words.items() if len(s) == 2 and s[0] in single and s[1] in single]
    assert pairs
    for token, (first, second) in pairs[:20]:
        assert torch.allclose(rows[token], (single[first] + single[second]) / 2**0.5, atol=1e-6)


def test_shared_words_raise_similarity_and_wordless_tokens_keep_their_start(tokenizer):
    plain, mixed, words = _rows(tokenizer, 0.0), _rows(tokenizer, 0.75), _words(tokenizer)
    wordless = [t for t, s in words.items() if not s]
    assert wordless and torch.equal(plain[wordless], mixed[wordless])
    assert abs(mixed.std().item() - plain.std().item()) < 0.2 * plain.std().item()  # the initial scale is kept
    cos = torch.nn.functional.cosine_similarity
    sharing, disjoint = [], []
    multi = [t for t, s in words.items() if len(s) >= 2]
    for a, b in itertools.combinations(multi[:80], 2):
        common = set(words[a]) & set(words[b])
        (sharing if common else disjoint).append(cos(mixed[a], mixed[b], dim=0).item())
    assert sharing and disjoint
    assert sum(sharing) / len(sharing) > 0.2 > abs(sum(disjoint) / len(disjoint))


def test_a_bad_share_is_refused(tokenizer):
    with pytest.raises(ValueError, match=r"word share must be in \(0, 1\]"):
        build_tiny_model(tokenizer, "micro", max_positions=64, word_share=1.5)
    with pytest.raises(ValueError, match=r"word_share must be in \[0, 1\]"):
        DefaultModelConfig(word_share=-0.1)
