"""A byte-level BPE tokenizer trained locally on environment text, with a chat template.

Invariant: byte-level BPE encodes any string (no unknown tokens) and decodes it
back exactly; ``<|im_start|>``/``<|im_end|>``/``<|endoftext|>`` are single special
tokens; ``<|im_end|>`` is the end-of-turn (eos) token, ``<|endoftext|>`` pads.

Two pre-tokenisations: ``word`` splits at spaces and punctuation (GPT-2 style);
``phrase`` splits only at punctuation and line breaks, so merges may span words.
The embedded CPU default uses ``phrase``: with a domain this small the commonest
phrases become single tokens (on BabyAI long spans of a sentence, " key 1 3 steps in
front of you and 2 steps to your right"), which cuts sequences about sevenfold. With
the BabyAI recipe's 2048 tokens every GoToLocal action is one token ("Action", ":",
" go to red key 1"); a smaller vocabulary or a rarer action leaves several. An action
that follows a delimiter and a space is encoded the same way in an observation's list
(", go to red key 1") as in a reply ("Action: go to red key 1"), so it can be copied
token by token. (Load a saved tokenizer with ``models.loading``: ``AutoTokenizer``
rebuilds it as the architecture's own class, with another pre-tokenisation.) ``word`` (``model.default.
tokenizer_split``) is TextCraft's and Deep Search's choice: there an unseen item's name is made of words the
warm-up wrote, where phrase merges make it tokens of its own (bench/RESULTS.md, "A base that copies and stops").
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from turnrl.config.model import TOKENIZER_SPLITS

PAD, BOS_TURN, EOS_TURN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS_TURN, EOS_TURN]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _pre_tokenizer(split: str):
    if split == "word":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split == "phrase":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"[,.:;!?\n\[\]()\"]"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    raise ValueError(f"unknown pre-tokenisation {split!r}; choose from: {', '.join(TOKENIZER_SPLITS)}")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, split: str = "phrase") -> PreTrainedTokenizerFast:
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = _pre_tokenizer(split)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    roles = ["system", "user", "assistant"]
    core.train_from_iterator(list(texts) + roles * 8, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TURN,
        pad_token=PAD,
        bos_token=None,
        unk_token=None,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
