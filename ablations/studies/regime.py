"""The regime map's analysis (``sweeps/regime_map.yaml``): LR sensitivity, each claim's paired
effect in each regime with the mechanism the telemetry shows, and the ε calibration.

Commands (read the collected tables, write nothing)::

    python -m ablations.studies.regime table RESULTS_DIR [--format md|csv]   # the README's regime
    table
    python -m ablations.studies.regime lr RESULTS_DIR [--format md|csv]      # the LR-sensitivity
    table
    python -m ablations.studies.regime decay RESULTS_DIR [--format md|csv]   # did the loss flatten?
    python -m ablations.studies.regime calibrate RUN_DIR|EXP_DIR --variant V|FILE.json [--json]
                                                                     # √v̂ quantiles -> matched ε

``RESULTS_DIR`` holds the map's experiments (``lr_sensitivity/``, ``warmup_bias_correction/``,
...; the committed ones: ``reproduction/regime_map``). A row whose experiment or variants are
missing is left out of the tables, never invented.

**LR sensitivity** (Wortsman et al. 2023, arXiv 2309.14322, §3.1): for one seed's curve ℓ(η) of
final validation MLM loss over the lr grid, E_η[min(ℓ(η), ℓ0) − min_η ℓ(η)], where ℓ0 is the
loss at initialization and a diverged run counts as ℓ0. ℓ0 here: the mean training MLM loss of
step 1 over the experiment's runs (computed before any update, so it is the initial loss of
each seed's weights). Reported per curve as the mean over seeds with a t-interval, with the
best loss (the lowest mean over seeds across the grid), its lr, and the largest lr at which no
seed diverged.

**Paired effects**: :func:`ablations.analysis.stats.paired_difference` of the final validation MLM
loss,
intervention minus reference, paired by seed; "resolved" when the 95% interval's half-width is
at most 0.01 nats (the issue's bar), else the row says unresolved.

**Mechanism** columns: ``eps_dominated`` (the share of the model's elements with √v̂ ≤ ε: each
tensor's fraction from :mod:`lamb_variants.telemetry` weighted by its elements, averaged over the
sampled steps and seeds) of the reference and the intervention; ``nodecay_step_first`` /
``_median``: the applied ‖Δw‖ of the bias and LayerNorm tensors (NVIDIA's no-decay group: plain
Adam steps in ``apex`` mode), intervention over reference, at the first sampled step (step 50,
where bias correction's factor is furthest from 1) and the median over the run;
``lr_mass_ratio``: Σ lr of the intervention over the reference's (the decay-degree rows).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablations import results as res
from ablations.analysis import stats
from ablations.core.errors import fail
from ablations.core.fileio import FrozenError, check_writable, write_json
from ablations.core.status import Status

METRIC = "final_val_mlm_loss"
#: The issue's bar for a resolved difference: a 95% interval half-width of at most this (nats).
RESOLVED = 0.01
#: The lr the recipe uses (NVIDIA phase 1) and the map's reference point.
RECIPE_LR = 6.0e-3
#: NVIDIA's no-decay group (lamb_variants.NVIDIA_NO_DECAY): biases and LayerNorm.
_NO_DECAY = ("bias", "LayerNorm")


@dataclass(frozen=True)
class Row:
    """One comparison of the regime table: ``a`` minus ``b`` in ``experiment``."""

    claim: str
    regime: str
    experiment: str
    a: str
    b: str


def _eps_rows(claim: str, prenorm: str, bias_correction: str) -> list[Row]:
    """``claim``'s rows over ε (``eps_calibrated``) and without it (``eps_free``): the toggles
    set to ``prenorm``, ``bias_correction`` against NVIDIA's clip and bias correction."""

    def name(first: str, prenorm: str, bias_correction: str) -> str:
        return f"{first},prenorm={prenorm},bias_correction={bias_correction}"

    shares = (
        ("1e-06", "~0%"),
        ("1.8e-05", "BERT-large's ~0.1%"),
        ("0.0001", "~18%"),
        ("0.001", "~90%"),
    )
    rows = [
        Row(
            claim,
            f"nvlamb, ε {eps} ({share} ε-dominated)",
            "eps_calibrated",
            name(f"eps={eps}", prenorm, bias_correction),
            name(f"eps={eps}", "clip", "true"),
        )
        for eps, share in shares
    ]
    rows.append(
        Row(
            claim,
            "nvlamb, ε-free (atan2)",
            "eps_free",
            name("eps_mode=atan2", prenorm, bias_correction),
            name("eps_mode=atan2", "clip", "true"),
        )
    )
    return rows


def _lr_row(claim: str, intervention: str, preset: str) -> Row:
    return Row(
        claim,
        f"{preset}, lr 6e-3",
        "lr_sensitivity",
        f"{intervention},preset={preset},lr=0.006",
        f"baseline,preset={preset},lr=0.006",
    )


#: The regime table, claim by claim: the intervention (a) against the recipe (b).
ROWS: tuple[Row, ...] = (
    _lr_row("pre-normalization off (Figure 2)", "no_prenorm", "apex"),
    _lr_row("pre-normalization off (Figure 2)", "no_prenorm", "nvlamb"),
    *_eps_rows("pre-normalization off (Figure 2)", "none", "true"),
    _lr_row("bias correction off", "no_bias_correction", "apex"),
    *(
        Row(
            "bias correction off",
            f"apex, warmup {w}",
            "warmup_bias_correction",
            f"warmup={v},bias_correction=false",
            f"warmup={v},bias_correction=true",
        )
        for w, v in (("0", "0.0"), ("3%", "0.03"), ("28.43%", "0.2843"))
    ),
    _lr_row("bias correction off", "no_bias_correction", "nvlamb"),
    *_eps_rows("bias correction off", "clip", "false"),
    Row(
        "decay degree 1.0 vs 0.5 (Figure 3)",
        "nvlamb, equal peak 6e-3",
        "decay_equal_mass",
        "degree_1.0",
        "degree_0.5",
    ),
    Row(
        "decay degree 1.0 vs 0.5 (Figure 3)",
        "nvlamb, equal Σlr (1.0 peaked up)",
        "decay_equal_mass",
        "degree_1.0_equal_mass",
        "degree_0.5",
    ),
    Row(
        "decay degree 1.0 vs 0.5 (Figure 3)",
        "nvlamb, equal Σlr (0.5 peaked down)",
        "decay_equal_mass",
        "degree_1.0",
        "degree_0.5_equal_mass",
    ),
)


# --- loading ------------------------------------------------------------------------------------


class _Tables:
    """Each experiment's runs, layers and curves, loaded once."""

    def __init__(self, results_dir: Path) -> None:
        self.dir = results_dir
        self._cache: dict[tuple[str, str], Any] = {}

    def sizes(self, experiment: str) -> dict[str, int]:
        if (experiment, "sizes") not in self._cache:
            self._cache[(experiment, "sizes")] = tensor_sizes(self.dir / experiment)
        return self._cache[(experiment, "sizes")]

    def get(self, experiment: str, kind: str) -> pd.DataFrame | None:
        key = (experiment, kind)
        if key not in self._cache:
            path = self.dir / experiment
            loader = {"runs": res.load_runs, "layers": res.load_layers, "curves": res.load_curves}
            self._cache[key] = loader[kind](path) if (path / f"{kind}.parquet").exists() else None
        return self._cache[key]


# --- LR sensitivity -----------------------------------------------------------------------------


def intervention(variant: str) -> str:
    """The named part of a named × grid variant (``no_prenorm,preset=apex,lr=0.003``)."""
    return str(variant).split(",", 1)[0]


def initial_loss(curves: pd.DataFrame) -> float:
    """ℓ0: the mean step-1 training MLM loss over the runs (before any update)."""
    first = curves[(curves["metric"] == "train/mlm_loss") & (curves["step"] == 1)]
    return float(first["value"].mean())


def lr_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run of ``lr_sensitivity``: mode, intervention, lr, seed, status,
    loss (NaN when diverged)."""
    done = runs[runs["status"].isin([Status.COMPLETE, Status.DIVERGED])]
    out = pd.DataFrame(
        {
            "mode": done["optimizer.preset"].astype(str),
            "intervention": done["variant"].map(intervention),
            "lr": done["phases.0.lr"].astype(float),
            "seed": done["seed"].astype(int),
            "diverged": done["status"] == Status.DIVERGED,
            "loss": done[METRIC].astype(float).where(done["status"] == Status.COMPLETE),
        }
    )
    return out.sort_values(["mode", "intervention", "lr", "seed"]).reset_index(drop=True)


def lr_sensitivity(points: pd.DataFrame, loss0: float) -> pd.DataFrame:
    """Per (mode, intervention): best loss and its lr, the largest lr with no divergence,
    Wortsman's LR sensitivity (mean over seeds, t-interval), divergences, and the paired
    difference of the sensitivity against the same mode's baseline."""
    rows = []
    per_seed: dict[tuple[str, str], pd.Series] = {}
    for (mode, name), g in points.groupby(["mode", "intervention"], sort=True):
        capped = g.assign(capped=g["loss"].fillna(loss0).clip(upper=loss0))
        sens = capped.groupby("seed").apply(
            lambda s: float((s["capped"] - s["capped"].min()).mean()), include_groups=False
        )
        per_seed[(mode, name)] = sens
        curve = g.groupby("lr")["loss"].mean()
        stable = g.groupby("lr")["diverged"].sum()
        stable = stable[stable == 0]
        mean, low, high = stats.t_interval(sens.to_numpy())
        rows.append(
            {
                "mode": mode,
                "intervention": name,
                "lrs": int(g["lr"].nunique()),
                "seeds": int(g["seed"].nunique()),
                "best_loss": float(curve.min()) if curve.notna().any() else math.nan,
                "best_lr": float(curve.idxmin()) if curve.notna().any() else math.nan,
                "max_stable_lr": float(stable.index.max()) if len(stable) else math.nan,
                "diverged": int(g["diverged"].sum()),
                "runs": len(g),
                "sensitivity": mean,
                "sensitivity_low": low,
                "sensitivity_high": high,
            }
        )
    table = pd.DataFrame(rows)
    deltas = []
    for row in rows:
        base = per_seed.get((row["mode"], "baseline"))
        mine = per_seed[(row["mode"], row["intervention"])]
        if base is None or row["intervention"] == "baseline":
            deltas.append((math.nan, math.nan, math.nan))
            continue
        d = (mine - base).dropna().to_numpy()
        deltas.append(stats.t_interval(d))
    if len(table):
        table[["delta_sensitivity", "delta_low", "delta_high"]] = deltas
    return table


# --- the regime table ---------------------------------------------------------------------------


def tensor_sizes(exp_dir: Path) -> dict[str, int]:
    """Elements per tensor of the experiment's model (from sweep.json's workload and the
    vocabulary in data.json: the committed results hold no run directories)."""
    from ablations.config import RunConfig
    from ablations.run.model import BertPretraining

    spec = res.load_spec(exp_dir)
    workload = dict(spec["experiment"]["workload"])
    if spec["experiment"].get("preset"):
        workload["optimizer"] = {**workload["optimizer"], "preset": spec["experiment"]["preset"]}
    config = RunConfig.from_dict(workload)
    data = json.loads((exp_dir / "data.json").read_text())
    model = BertPretraining(config.model, int(data["phase1_vocab_size"]))
    return {n: p.numel() for n, p in model.named_parameters()}


def eps_dominated_share(layers: pd.DataFrame, sizes: dict[str, int]) -> pd.Series:
    """Per variant, the share of the model's elements with √v̂ ≤ ε: each tensor's fraction
    weighted by its elements, averaged over the sampled steps and seeds."""
    df = layers.dropna(subset=["eps_dominated"])
    weight = df["tensor"].astype(str).map(sizes).astype(float)
    df = df.assign(w=weight, wf=weight * df["eps_dominated"])
    per_sample = df.groupby([df["variant"].astype(str), "trial", "step"])[["wf", "w"]].sum()
    share = per_sample["wf"] / per_sample["w"]
    return share.groupby(level=0).mean()


def _eps_share(tables: _Tables, experiment: str, variant: str) -> float:
    layers = tables.get(experiment, "layers")
    if layers is None or "eps_dominated" not in layers or layers["eps_dominated"].isna().all():
        return math.nan
    share = eps_dominated_share(layers, tables.sizes(experiment))
    return float(share.get(variant, math.nan))


def _nodecay_step_ratio(layers: pd.DataFrame | None, a: str, b: str) -> tuple[float, float]:
    """The applied ‖Δw‖ (relative update × ‖w‖) of the bias and LayerNorm tensors, mean over
    them and seeds, of ``a`` over ``b``: at the first sampled step and the median over the
    sampled steps where the lr is not 0 (absolute steps: biases start at 0, so their relative
    steps would mostly say how large their norm has grown)."""
    if layers is None or "relative_update" not in layers:
        return math.nan, math.nan
    sel = layers[layers["tensor"].str.contains("|".join(_NO_DECAY))]
    sel = sel.assign(step_norm=sel["relative_update"] * sel["weight_norm"])
    by = sel.groupby([sel["variant"].astype(str), "step"])["step_norm"].mean().unstack(0)
    if a not in by or b not in by:
        return math.nan, math.nan
    ratio = (by[a] / by[b]).replace([np.inf, -np.inf], np.nan).dropna()
    if ratio.empty:
        return math.nan, math.nan
    return float(ratio.iloc[0]), float(ratio.median())


def _lr_mass_ratio(curves: pd.DataFrame | None, a: str, b: str) -> float:
    if curves is None:
        return math.nan
    lr = curves[curves["metric"] == "optim/lr"]
    mass = lr.groupby([lr["variant"].astype(str), "seed"])["value"].sum()
    mass = mass.groupby(level=0).mean()
    return float(mass[a] / mass[b]) if a in mass and b in mass else math.nan


def regime_table(results_dir: Path | str, rows: Sequence[Row] = ROWS) -> pd.DataFrame:
    """The regime table: one line per :data:`ROWS` entry whose runs exist."""
    tables = _Tables(Path(results_dir))
    out = []
    for row in rows:
        runs = tables.get(row.experiment, "runs")
        if runs is None:
            continue
        finished = runs[runs["status"].isin([Status.COMPLETE, Status.DIVERGED])]
        present = set(finished["variant"].astype(str))
        if row.a not in present or row.b not in present:
            continue  # not run (yet): no row rather than an empty one
        d = stats.paired_difference(runs, row.a, row.b, METRIC)
        counts = runs[runs["variant"].astype(str).isin([row.a, row.b])]
        diverged = counts[counts["status"] == Status.DIVERGED]["variant"].astype(str)
        layers = tables.get(row.experiment, "layers")
        half = (d["high"] - d["low"]) / 2
        out.append(
            {
                "claim": row.claim,
                "regime": row.regime,
                "experiment": row.experiment,
                "a": row.a,
                "b": row.b,
                "n": d["n"],
                "delta": d["mean"],
                "low": d["low"],
                "high": d["high"],
                "resolved": bool(np.isfinite(half) and half <= RESOLVED),
                "diverged_a": int((diverged == row.a).sum()),
                "diverged_b": int((diverged == row.b).sum()),
                "eps_dominated_b": _eps_share(tables, row.experiment, row.b),
                "eps_dominated_a": _eps_share(tables, row.experiment, row.a),
                **dict(
                    zip(
                        ("nodecay_step_first", "nodecay_step_median"),
                        _nodecay_step_ratio(layers, row.a, row.b),
                        strict=True,
                    )
                ),
                "lr_mass_ratio": _lr_mass_ratio(
                    tables.get(row.experiment, "curves") if "degree" in row.a else None,
                    row.a,
                    row.b,
                ),
            }
        )
    return pd.DataFrame(out)


# --- formatting ---------------------------------------------------------------------------------


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
            }
        )
    return pd.DataFrame(lines).to_markdown(index=False)


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
                "largest stable lr": _num(r["max_stable_lr"], 3),
                "diverged": f"{r['diverged']}/{r['runs']}",
                "LR sensitivity": f"{r['sensitivity']:.3f}",
                "Δ vs baseline [95% CI]": delta,
            }
        )
    return pd.DataFrame(lines).to_markdown(index=False)


def lr_table(results_dir: Path | str) -> pd.DataFrame:
    tables = _Tables(Path(results_dir))
    runs, curves = tables.get("lr_sensitivity", "runs"), tables.get("lr_sensitivity", "curves")
    if runs is None or curves is None:
        return pd.DataFrame()
    return lr_sensitivity(lr_points(runs), initial_loss(curves))


# --- decay: did the loss flatten? -------------------------------------------------------------

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


# --- calibration --------------------------------------------------------------------------------

#: BERT-large (NVIDIA's recipe): parameters, ε, and the clipped global gradient norm.
LARGE_PARAMS = 3.35e8
LARGE_EPS = 1e-6
LARGE_GRAD_NORM = 1.0


def calibrate(checkpoint: Path | str) -> dict[str, Any]:
    """√v̂ of every element with a gradient, from a phase checkpoint's optimizer state: its
    quantiles, its RMS over all elements, the share at or below candidate ε values, and the ε
    that puts this model where BERT-large is: ε_large·√N_large/G_large is ε over BERT-large's
    per-element RMS gradient; assuming the distribution of √v̂/RMS has the same shape here, the
    matched ε is that ratio times this model's RMS, and the share it leaves ε-dominated is the
    estimate of BERT-large's."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["optimizer_states"][0]
    groups = state["param_groups"]
    step = groups[0]["step"]
    beta2 = groups[0]["betas"][1]
    correct = groups[0].get("bias_correction", True) is True
    bc2 = 1 - beta2**step if correct else 1.0
    v = torch.cat([s["exp_avg_sq"].flatten().double() for s in state["state"].values()]) / bc2
    rms = float(v.mean().sqrt())
    seen = np.sort(v[v > 0].sqrt().numpy())
    ratio = LARGE_EPS * math.sqrt(LARGE_PARAMS) / LARGE_GRAD_NORM
    matched = ratio * rms
    candidates = (1e-6, matched, 1e-4, 3e-4, 1e-3)
    return {
        "step": int(step),
        "elements": int(v.numel()),
        "with_gradient": int(seen.size),
        "rms_sqrt_v": rms,
        "quantiles": {q: float(np.quantile(seen, q)) for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9)},
        "large_eps_over_rms": ratio,
        "matched_eps": matched,
        "share_at": {e: float(np.mean(seen <= e)) for e in candidates},
    }


def _calibration(source: Path, variant: str | None, seed: int) -> dict[str, Any]:
    """:func:`calibrate` of a run (found by variant and seed in an experiment directory), or
    the numbers saved from it (``make reproduce-map`` commits them: the checkpoint is not)."""
    if source.is_file():
        return json.loads(source.read_text())
    if variant is not None:
        runs = [
            d.parent
            for d in sorted(source.glob("*/trial.json"))
            if (info := json.loads(d.read_text())).get("variant") == variant
            and info.get("seed") == seed
        ]
        if not runs:
            raise ValueError(f"{source}: no trial of variant {variant!r} with seed {seed}")
        source = runs[0]
    ckpt = source / "checkpoints" / "phase1" / "end.ckpt"
    if not ckpt.exists():
        raise ValueError(f"{ckpt}: expected the end checkpoint of a finished phase-1 run")
    return {"run": str(source), **calibrate(ckpt)}


def calibration_text(out: dict[str, Any]) -> str:
    """The calibration as the README quotes it."""
    quantiles = ", ".join(f"{100 * float(q):g}% {x:.3g}" for q, x in out["quantiles"].items())
    shares = ", ".join(f"{float(e):.3g}: {100 * v:.3g}%" for e, v in out["share_at"].items())
    return "\n".join(
        [
            f"step {out['step']}: {out['with_gradient']} of {out['elements']} elements had a "
            f"gradient; RMS of sqrt(v_hat) over all elements {out['rms_sqrt_v']:.3g}",
            f"quantiles of sqrt(v_hat) over those elements: {quantiles}",
            f"BERT-large: eps / per-element RMS gradient = {out['large_eps_over_rms']:.4f}, so "
            f"the matched eps here is {out['matched_eps']:.3g}",
            f"share of elements eps-dominated at eps = {shares}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablations.studies.regime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("table", "lr", "decay"):
        p = sub.add_parser(name)
        p.add_argument("results", type=Path)
        p.add_argument("--format", choices=("md", "csv"), default="md")
    p = sub.add_parser("calibrate")
    p.add_argument(
        "source",
        type=Path,
        help="a finished run's directory, an experiment's (with --variant/--seed), or a saved "
        "calibration JSON",
    )
    p.add_argument("--variant", help="the run of this variant in an experiment directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--out", type=Path, help="also save them as JSON here (make reproduce-map)")
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        try:
            out = _calibration(args.source, args.variant, args.seed)
            if args.out is not None:
                check_writable(args.out)
                write_json(args.out, out)
        except (OSError, ValueError, FrozenError) as e:
            return fail(e)
        print(json.dumps(out, indent=1) if args.json else calibration_text(out))
        return 0
    if not args.results.is_dir():
        return fail(
            ValueError(f"{args.results}: expected a folder of the regime map's experiments")
        )
    if args.command == "decay":
        curves = _Tables(args.results).get("decay_equal_mass", "curves")
        table = flattening(curves) if curves is not None else pd.DataFrame()
    elif args.command == "table":
        table = regime_table(args.results)
    else:
        table = lr_table(args.results)
    if table.empty:
        return fail(
            ValueError(
                f"{args.results}: no regime-map comparison with finished runs (collect first)"
            )
        )
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif args.command == "decay":
        print(table.to_markdown(index=False, floatfmt=".4f"))
    else:
        print(regime_markdown(table) if args.command == "table" else lr_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
