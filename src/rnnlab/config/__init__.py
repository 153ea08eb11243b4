"""The run config: typed sections, presets as data, and the one resolution path."""
