"""The models: language models with their output heads, and the piano-roll model."""
