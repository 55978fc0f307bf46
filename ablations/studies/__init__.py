"""One study per sweep file, each answering its questions from collected tables: ``regime`` (a
package, one module per question; figures in ``regime_plots``): the regime map,
``sweeps/regime_map.yaml``; ``scaling`` (with ``scaling_plots``): the batch-scaling study,
``sweeps/batch_scaling.yaml``.

Adding a study means adding a module or package here (and its plots), a notebook in
``notebooks/`` and a sweep file in ``sweeps/``; it reads its runs through :mod:`ablations.results`
and selects them by their settings columns (the resolved toggles, :mod:`selection`), not by the
grid's generated variant names.
"""
