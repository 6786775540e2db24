"""Training: the loop (one screen), its setup and resume, the rollout producer, the learner, token batches and the
embedded default policy with its format warm-up."""
