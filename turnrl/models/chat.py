"""Token segments of a multi-turn chat, derived once from the tokenizer's chat template.

Invariant (token in, token out): the model's own output tokens are never decoded
and re-encoded into the context. Only the template around them and the
observations are tokenised, once each, and appended: the prompt (system + first
observation + assistant header) and, after each policy turn, the segment that
closes the turn, opens a user turn with the observation and opens the next
assistant turn. If the policy already emitted the end-of-turn token, that token
is not added again.
"""

from __future__ import annotations

_SENTINEL_ASSISTANT = "\x00ASSISTANT\x00"
_SENTINEL_USER = "\x00USER\x00"


class ChatFormat:
    def __init__(self, tokenizer) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template; multi-turn episodes need one")
        self.tokenizer = tokenizer
        self.stop_token_ids = self._stop_ids(tokenizer)
        self._suffix_template = self._derive_suffix_template()

    @staticmethod
    def _stop_ids(tokenizer) -> tuple[int, ...]:
        ids = []
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
            tid = tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
                ids.append(tid)
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        return tuple(dict.fromkeys(ids))

    def _render(self, messages, add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _derive_suffix_template(self) -> str:
        messages = [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": _SENTINEL_ASSISTANT},
            {"role": "user", "content": _SENTINEL_USER},
        ]
        text = self._render(messages, add_generation_prompt=True)
        start = text.index(_SENTINEL_ASSISTANT) + len(_SENTINEL_ASSISTANT)
        suffix = text[start:]
        if _SENTINEL_USER not in suffix:
            raise ValueError("chat template does not render a user turn after an assistant turn")
        return suffix

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, system: str, observation: str) -> list[int]:
        messages = [{"role": "user", "content": observation}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return self.encode_text(self._render(messages, add_generation_prompt=True))

    def continuation_ids(self, observation: str, output_ids: list[int]) -> list[int]:
        """Tokens to append after the policy's output: end of turn, observation, next assistant header."""
        suffix = self._suffix_template.replace(_SENTINEL_USER, observation)
        if output_ids and output_ids[-1] in self.stop_token_ids:
            stop_text = self.tokenizer.decode([output_ids[-1]])
            if suffix.startswith(stop_text):
                suffix = suffix[len(stop_text) :]
        return self.encode_text(suffix)
