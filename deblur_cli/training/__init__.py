"""Training loop, checkpoints and losses."""
