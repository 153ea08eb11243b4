"""Exporting trained runs for use outside rnnlab (ONNX, for a sampler without PyTorch)."""
