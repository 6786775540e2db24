"""Chat layout: prompt, continuation segments, stop tokens; the tokenizer round-trips."""

from __future__ import annotations

import pytest

from turnrl.config.model import DefaultModelConfig
from turnrl.models.chat import ChatFormat
from turnrl.models.tokenizer import train_tokenizer


def test_tokenizer_round_trips_any_text(tokenizer):
    for text in ["Your goal: go to the red key", "ünïcödé and emoji 🤖 never seen", "Action: go to red ball 1\n"]:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_special_tokens_are_single(tokenizer):
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids)[0] == token
    assert tokenizer.eos_token == "<|im_end|>"


def test_prompt_and_continuation_render_the_template(chat, tokenizer):
    prompt = chat.prompt_ids("be brief", "first observation")
    reply = [*chat.encode_text("Action: turn left"), tokenizer.eos_token_id]
    cont = chat.continuation_ids("second observation", reply)
    text = tokenizer.decode(prompt + reply + cont)
    expected = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first observation"},
            {"role": "assistant", "content": "Action: turn left"},
            {"role": "user", "content": "second observation"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == expected


def test_continuation_closes_a_turn_cut_by_length(chat, tokenizer):
    reply = chat.encode_text("Action: turn")  # no end-of-turn token: the generation hit its length limit
    cont = chat.continuation_ids("obs", reply)
    assert cont[0] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_stop_tokens(chat, tokenizer):
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in chat.stop_token_ids


def test_tokenizer_without_template_is_rejected(tokenizer):
    bare = train_tokenizer(["a b c"] * 5, vocab_size=300)
    bare.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        ChatFormat(bare)


def test_bad_vocab_and_split():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["x"], vocab_size=10)
    with pytest.raises(ValueError, match="pre-tokenisation"):
        train_tokenizer(["x"], vocab_size=400, split="syllable")
    with pytest.raises(ValueError, match="tokenizer_split"):
        DefaultModelConfig(tokenizer_split="syllable")


def test_word_split_never_merges_across_words_and_phrase_may():
    corpus = ["Action: go to red ball 1, go to red ball 1, go to blue key 2"] * 50
    pieces = {}
    for split in ("word", "phrase"):
        tok = train_tokenizer(corpus, vocab_size=400, split=split)
        ids = tok.encode("Action: go to red ball 1", add_special_tokens=False)
        pieces[split] = [tok.decode([i]) for i in ids]
        assert "".join(pieces[split]) == "Action: go to red ball 1"
    assert all(" " not in piece.strip() for piece in pieces["word"])
    assert any(" " in piece.strip() for piece in pieces["phrase"])
