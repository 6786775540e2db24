"""Policy models: loading any local HF causal LM, and the tiny built-in default for CPU."""

from turnrl.models.chat import ChatFormat
from turnrl.models.loading import check_model_dir, load_policy, save_policy

__all__ = ["ChatFormat", "check_model_dir", "load_policy", "save_policy"]
