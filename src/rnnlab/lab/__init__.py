"""The laboratory: comparison grids, reports, plots, gradient flow."""
