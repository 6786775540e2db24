"""Loading a policy: any local Hugging Face causal-LM directory, or the embedded default.

Invariant: nothing is downloaded (``local_files_only``); a path that is not a
model directory is a ``ValueError`` naming the path; the tokenizer must carry a
chat template (multi-turn episodes are laid out with it); a saved policy loads
back with exactly the tokenizer it was saved with (a generic ``tokenizer.json``
is not re-interpreted through the architecture's own tokenizer class, which
would silently re-split the text).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # no per-save progress bars in the middle of a training run


def check_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"model path {str(path)!r} does not exist or is not a directory")
    if not (path / "config.json").is_file():
        raise ValueError(f"model path {str(path)!r} has no config.json (not a Hugging Face model directory)")
    return path


_GENERIC_TOKENIZER_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def load_tokenizer(path: Path):
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if config.get("tokenizer_class") in _GENERIC_TOKENIZER_CLASSES and (path / "tokenizer.json").is_file():
        # AutoTokenizer would map a generic tokenizer to the model type's class and rebuild its pre-tokenizer
        return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_policy(path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu"):
    path = check_model_dir(path)
    tokenizer = load_tokenizer(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype).to(device)
    model.eval()
    return model, tokenizer


def save_policy(model, tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
