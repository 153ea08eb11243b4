"""The trainer, its task strategies, distributed training, memory estimate, regularizers."""
