"""The regime-map page's tables (docs/results/regime-map.md) as Markdown: the regime table
(:func:`ablations.studies.regime.effects.regime_table`) and the LR-sensitivity table
(:func:`ablations.studies.regime.lr.lr_table`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablations.analysis.verdicts import Answer, Verdict


def _num(x: float, digits: int = 4, sign: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}g}"


def _percent(x: float) -> str:
    return f"{100 * x:.2g}%"


def regime_markdown(table: pd.DataFrame) -> str:
    """The README's regime table."""
    lines = []
    for _, r in table.iterrows():
        interval = (
            f"{_num(r['delta'], sign=True)} [{_num(r['low'], sign=True)}, "
            f"{_num(r['high'], sign=True)}]"
        )
        if r["resolved"]:
            verdict = ""
        elif np.isfinite(r["low"]) and (r["low"] > 0 or r["high"] < 0):
            verdict = " (sign resolved, interval wider than ±0.01)"
        else:
            verdict = " (unresolved)"
        mech = []
        if np.isfinite(r["eps_dominated_b"]) and np.isfinite(r["eps_dominated_a"]):
            shares = (_percent(r["eps_dominated_b"]), _percent(r["eps_dominated_a"]))
            mech.append(f"ε-dominated {shares[0]} → {shares[1]}")
        if np.isfinite(r["nodecay_step_first"]):
            mech.append(
                f"bias/LN ‖Δw‖ ×{r['nodecay_step_first']:.3g} at step 50, "
                f"×{r['nodecay_step_median']:.3g} median"
            )
        if np.isfinite(r["lr_mass_ratio"]):
            mech.append(f"Σlr ×{r['lr_mass_ratio']:.3g}")
        lines.append(
            {
                "claim": r["claim"],
                "regime": r["regime"],
                "Δ final val MLM loss [95% CI]": interval + verdict,
                "seeds": int(r["n"]),
                "diverged": f"{r['diverged_a']} / {r['diverged_b']}",
                "mechanism (reference → intervention)": "; ".join(mech) or "–",
                "verdict (hypothesis)": _verdict(r.get("verdict")),
            }
        )
    return pd.DataFrame(lines).to_markdown(index=False)


def _verdict(v: Verdict | None) -> str:
    """A row's verdict as a citable ``id: answer`` span, with the MDE when unresolved."""
    if v is None:
        return "–"
    if v.answer == Answer.UNRESOLVED and v.mde is not None and np.isfinite(v.mde):
        return f"`{v.id}: {v.answer}` (MDE {v.mde:.3f})"
    return f"`{v.id}: {v.answer}`"


def _edge(r: pd.Series) -> str:
    """The stability edge as an interval: ``(largest trained lr, first failing lr]``, or
    censored at the grid's end it lies beyond."""
    if r["edge"] == "censored above":
        return f"> {r['max_trained_lr']:.3g} (censored: none failed)"
    if r["edge"] == "censored below":
        return f"≤ {r['first_failed_lr']:.3g} (censored: the lowest lr failed)"
    return f"({r['max_trained_lr']:.3g}, {r['first_failed_lr']:.3g}]"


def lr_markdown(table: pd.DataFrame) -> str:
    """The README's LR-sensitivity table."""
    lines = []
    for _, r in table.iterrows():
        delta = (
            "–"
            if not np.isfinite(r["delta_sensitivity"])
            else f"{_num(r['delta_sensitivity'], 3, True)} "
            f"[{_num(r['delta_low'], 3, True)}, {_num(r['delta_high'], 3, True)}]"
        )
        lines.append(
            {
                "mode": r["mode"],
                "intervention": r["intervention"],
                "best loss (lr)": f"{r['best_loss']:.4f} ({r['best_lr']:.3g})",
                "stability edge": _edge(r),
                "failed · diverged": f"{r['failed']} · {r['diverged']} of {r['runs']}",
                "warning signs": f"{r['warned']}/{r['runs']}",
                "LR sensitivity": f"{r['sensitivity']:.3f}",
                "Δ vs baseline [95% CI]": delta,
            }
        )
    return pd.DataFrame(lines).to_markdown(index=False)
