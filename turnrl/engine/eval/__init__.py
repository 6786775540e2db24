"""Evaluation: held-out success during training, and ``turnrl eval`` (Avg@k / Pass@k per category)."""
