"""The look every figure shares: the seaborn theme, axis labels, one colour per variant (in the
experiment's order), the widest a figure may be, and how it is written to PNG.
:mod:`ablations.analysis.figures` draws with these and hands them on to the notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns

__all__ = [
    "DPI",
    "MAX_WIDTH",
    "distinct_colors",
    "label",
    "palette",
    "save",
    "setup",
    "variant_order",
    "wrap_variant_ticks",
]

_LABELS = {
    "train/loss": "training loss (MLM + NSP, nats)",
    "train/mlm_loss": "training MLM loss (nats)",
    "val/loss": "validation loss (MLM + NSP, nats)",
    "val/mlm_loss": "validation MLM loss (nats)",
    "val/nsp_loss": "validation NSP loss (nats)",
    "val/mlm_acc": "validation MLM accuracy",
    "optim/grad_norm": "global gradient norm",
    "optim/lr": "learning rate",
    "phase_step": "optimizer step",
    "step": "optimizer step (run)",
    "samples": "samples seen",
    "wall_time": "training time (s)",
}


def setup() -> None:
    """The shared seaborn theme (white grid, notebook context)."""
    sns.set_theme(style="whitegrid", context="notebook")


def label(name: str) -> str:
    """An axis label for a metric or coordinate name."""
    return _LABELS.get(name, name)


def palette(variants: Sequence[str] | pd.Series) -> dict[str, Any]:
    """One colour per variant, in the variants' (categorical) order: stable across figures."""
    names = variant_order(variants)
    return dict(zip(names, distinct_colors(len(names)), strict=False))


def variant_order(variants: Sequence[str] | pd.Series) -> list[str]:
    if isinstance(variants, pd.Series) and isinstance(variants.dtype, pd.CategoricalDtype):
        present = set(variants.dropna().astype(str))
        return [str(c) for c in variants.cat.categories if str(c) in present]
    return list(dict.fromkeys(str(v) for v in variants))


#: The widest a figure may be (inches; :func:`save` writes :data:`DPI` pixels per inch): an
#: experiment of many variants wraps its panels onto more rows instead of growing sideways.
MAX_WIDTH = 16.0
DPI = 120


def distinct_colors(n: int, sequential: bool = False) -> list[Any]:
    """``n`` colours: a dark-to-light ramp for an ordered toggle (lr), else distinct hues
    (seaborn's palette up to 10, ``husl`` beyond, which does not repeat)."""
    if sequential and n > 2:
        return sns.color_palette("viridis", n + 1)[:n]  # without the last, pale yellow
    return sns.color_palette(n_colors=max(n, 1)) if n <= 10 else sns.color_palette("husl", n)


def wrap_variant_ticks(ax: Any) -> None:
    """Grid variant names (``prenorm=none,eps=1e-06``) one toggle per line, so that a dozen
    variants stay readable side by side."""
    labels = [t.get_text() for t in ax.get_xticklabels()]
    if any("," in name for name in labels):
        ax.set_xticks(ax.get_xticks(), [n.replace(",", "\n") for n in labels], fontsize="small")


def save(fig: Any, figures_dir: Path | str, name: str) -> Path:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` (folder created) and return the path."""
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path
