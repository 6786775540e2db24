"""A run directory's records: metrics rows and their sinks, checkpoints, trajectory logs, the summary, plots and
progress hooks."""
