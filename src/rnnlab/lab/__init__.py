"""The laboratory: comparison grids, reports, plots, gradient flow.

The grid behind ``rnnlab compare`` has one job per module, each importing only the ones listed
before it:
:mod:`~rnnlab.lab.grid` (the axes, matched sizes and the plan of runs),
:mod:`~rnnlab.lab.results` (reading what the runs produced: rows, curves, selected rates, means),
:mod:`~rnnlab.lab.plots` (the PNG plots), :mod:`~rnnlab.lab.report` (``results.csv``,
``summary.md``), :mod:`~rnnlab.lab.runner` (training the grid, resuming, then the report).
:mod:`~rnnlab.lab.gradflow` measures how far gradients reach back in time.
"""
