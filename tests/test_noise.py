"""The gradient noise scale (ablations.run.noise, log.noise_scale): the two-batch estimator on a
problem with a known gradient covariance, and the harness's micro-batch norms against gradients
computed here, micro-batch by micro-batch, on a copy of the model."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import synthetic
import torch
from lightning.pytorch.callbacks import Callback
from test_train import PHASE, config, lines

from ablations.config import ConfigError, RunConfig
from ablations.run import noise
from ablations.run.train import train


def test_two_batch_recovers_the_truth_from_expected_norms():
    """E|G_b|² = |G|² + tr Σ / b: from exact expectations the estimator is exact."""
    grad_sq, trace = 2.5, 40.0
    for b, big in ((1, 2), (8, 64), (32, 4096)):
        small_sq, big_sq = grad_sq + trace / b, grad_sq + trace / big
        assert noise.two_batch(small_sq, big_sq, b, big) == pytest.approx((grad_sq, trace))
    assert all(math.isnan(x) for x in noise.two_batch(1.0, 1.0, 8, 8))


def test_estimator_on_gaussian_gradients_with_a_known_covariance():
    """Per-example gradients g = G + L z (z standard normal): |G|² and tr Σ = ‖L‖_F² are known.
    Micro-batches of b = 4, steps of k = 8 of them; the per-step estimates average to the truth
    (unbiased), and the smoothed B_simple lands near tr Σ / |G|²."""
    rng = np.random.default_rng(0)
    d, b, k, steps = 20, 4, 8, 4000
    G = rng.normal(size=d) * 0.3
    L = rng.normal(size=(d, d)) * 0.5
    true_grad_sq, true_trace = float(G @ G), float((L**2).sum())
    estimates, scale = [], noise.NoiseScale()
    for _ in range(steps):
        examples = G + rng.normal(size=(k, b, d)) @ L.T
        micro = examples.mean(axis=1)  # [k, d]
        small_sq = float((micro**2).sum(axis=1).mean())
        big_sq = float((micro.mean(axis=0) ** 2).sum())
        estimates.append(noise.two_batch(small_sq, big_sq, b, b * k))
        b_simple = scale.update(*estimates[-1], decay=0.999)
    est = np.array(estimates)
    for column, truth in ((0, true_grad_sq), (1, true_trace)):
        mean, sem = est[:, column].mean(), est[:, column].std(ddof=1) / math.sqrt(steps)
        assert abs(mean - truth) < 4 * sem, (column, mean, truth, sem)
    assert b_simple == pytest.approx(true_trace / true_grad_sq, rel=0.15)


class _Capture(Callback):
    """The weights before training and the first optimizer step's micro-batches."""

    def __init__(self, accumulation: int) -> None:
        self.accumulation, self.batches, self.model = accumulation, [], None

    def on_train_start(self, trainer, pl_module) -> None:
        self.model = copy.deepcopy(pl_module.model)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if len(self.batches) < self.accumulation:
            self.batches.append({k: v.clone() for k, v in batch.items()})


def test_harness_micro_batch_norms_match_gradients_computed_here(tmp_path):
    """Global batch 16 in micro-batches of 4 (k = 4), dropout 0: step 1's ``noise/small_sq``
    is the mean of the four micro-batch gradients' squared norms and ``noise/big_sq`` the
    squared norm of their mean, both computed here on a copy of the initial model."""
    phase = {**PHASE, "global_batch": 16, "micro_batch": 4, "steps": 4, "lr": 1e-2}
    cfg = config(phases=[phase], model={"size": "tiny", "dropout": 0.0})
    cfg = RunConfig.from_dict(
        {**cfg.to_dict(), "log": {**cfg.to_dict()["log"], "noise_scale": True}}
    )
    capture = _Capture(accumulation=4)
    assert train(cfg, tmp_path, synthetic.make, callbacks=[capture])["status"] == "complete"

    grads = []
    for batch in capture.batches:
        capture.model.zero_grad()
        capture.model(batch)["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in capture.model.parameters()]).double())
    small = float(torch.stack([(g**2).sum() for g in grads]).mean())
    big = float((torch.stack(grads).mean(0) ** 2).sum())
    metrics = lines(tmp_path)
    first = metrics[0]
    assert first["noise/small_sq"] == pytest.approx(small, rel=1e-4)
    assert first["noise/big_sq"] == pytest.approx(big, rel=1e-4)
    assert (first["noise/grad_sq"], first["noise/trace"]) == pytest.approx(
        noise.two_batch(small, big, 4, 16), rel=1e-3
    )
    assert all(math.isfinite(m["noise/b_simple"]) for m in metrics if m["noise/grad_sq"] > 0)
    ckpt = torch.load(
        tmp_path / "checkpoints" / "phase1" / "end.ckpt", map_location="cpu", weights_only=False
    )
    saved = ckpt["ablations"]["noise"]
    assert set(saved) == {"grad_sq", "trace"} and all(math.isfinite(v) for v in saved.values())


def test_noise_scale_needs_two_batch_sizes():
    cfg = config()
    raw = cfg.to_dict()
    raw["log"] = {**raw["log"], "noise_scale": True}
    raw["phases"] = [{**raw["phases"][0], "global_batch": 16, "micro_batch": 16}]
    with pytest.raises(ConfigError, match=r"^log\.noise_scale: expected two batch sizes"):
        RunConfig.from_dict(raw)
    raw["phases"] = [{**raw["phases"][0], "micro_batch": 8}]
    RunConfig.from_dict({**raw, "devices": 2})  # two ranks of 8: b = 8 < B = 16
    RunConfig.from_dict(raw)  # accumulation of 2


def test_the_pooled_ratio_of_sums_is_consistent_where_the_ema_ratio_is_not():
    """The batch study's ``Σtr/Σ|G|²`` (``ablations.studies.scaling.pooled_b_simple``) on the
    same Gaussian gradients, in the regime of the study's small batches (B_noise ~ 10 x the
    batch, |Ĝ|² at or below zero in a sizeable share of steps): within 4 delta-method standard
    errors of tr Σ / |G|², while the per-step ratio over the positive steps is far off."""
    from ablations.studies.scaling import pooled_b_simple

    rng = np.random.default_rng(1)
    d, b, k, steps = 20, 4, 2, 8000
    G = rng.normal(size=d) * 0.4
    L = rng.normal(size=(d, d)) * 0.5
    truth = float((L**2).sum()) / float(G @ G)
    est = []
    for _ in range(steps):
        micro = (G + rng.normal(size=(k, b, d)) @ L.T).mean(axis=1)
        small_sq = float((micro**2).sum(axis=1).mean())
        big_sq = float((micro.mean(axis=0) ** 2).sum())
        est.append(noise.two_batch(small_sq, big_sq, b, b * k))
    grad_sq, trace = np.array(est)[:, 0], np.array(est)[:, 1]
    assert 5 < truth / (b * k) < 20 and (grad_sq <= 0).mean() > 0.2  # the study's regime
    pooled = pooled_b_simple(trace, grad_sq)
    se = (trace - pooled * grad_sq).std(ddof=1) / (math.sqrt(steps) * grad_sq.mean())
    assert abs(pooled - truth) < 4 * se and se < 0.1 * truth, (pooled, truth, se)
    per_step = trace[grad_sq > 0] / grad_sq[grad_sq > 0]
    assert abs(np.median(per_step) - truth) > 8 * se  # what a ratio per step would say
    assert math.isnan(pooled_b_simple(trace[:1], -np.abs(grad_sq[:1])))  # no positive sum
