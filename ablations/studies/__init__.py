"""One module per study, each answering the questions of its sweep file from collected tables:
``regime`` (with ``regime_plots``): the regime map, ``sweeps/regime_map.yaml``; ``scaling``
(with ``scaling_plots``): the batch-scaling study, ``sweeps/batch_scaling.yaml``.

Adding a study means adding a module here (and its plots), a notebook in ``notebooks/`` and a
sweep file in ``sweeps/``; it reads its runs through :mod:`ablations.results` and selects them
by their settings columns (the resolved toggles), not by the grid's generated variant names.
"""
