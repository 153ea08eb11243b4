"""Cells, layers and the NumPy reference: the recurrent equations, nothing about files or training."""
