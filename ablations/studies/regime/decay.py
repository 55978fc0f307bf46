"""Did the decay runs flatten (``decay_equal_mass``)? The criterion: the validation MLM loss falls
by less than :data:`FLAT_NATS` over the last :data:`FLAT_FRACTION` of the steps (one row per
variant: ``python -m ablations.studies.regime decay``)."""

from __future__ import annotations

import pandas as pd

#: The flattening criterion of ``decay_equal_mass``: the validation loss falls by less than this
#: (nats) over the last :data:`FLAT_FRACTION` of the steps.
FLAT_NATS = 0.01
FLAT_FRACTION = 0.2


def flattening(curves: pd.DataFrame) -> pd.DataFrame:
    """Per variant: the validation MLM loss at the first validation at or after (1 − 20%) of
    the run and at its end (means over seeds), the drop between them, and whether it is below
    :data:`FLAT_NATS`."""
    val = curves[curves["metric"] == "val/mlm_loss"]
    rows = []
    for variant, g in val.groupby(val["variant"].astype(str), sort=True):
        end = int(g["step"].max())
        start = int(g.loc[g["step"] >= (1 - FLAT_FRACTION) * end, "step"].min())
        at = g.groupby("step")["value"].mean()
        rows.append(
            {
                "variant": variant,
                "from_step": start,
                "to_step": end,
                "loss_from": float(at[start]),
                "loss_end": float(at[end]),
                "drop": float(at[start] - at[end]),
                "flattened": bool(at[start] - at[end] < FLAT_NATS),
            }
        )
    return pd.DataFrame(rows)
