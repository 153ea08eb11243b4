"""The run directory: checkpoints, loading a trained run for inference, metrics files."""
