"""The gradient noise scale B_simple = tr(Σ)/|G|² from two batch sizes (McCandlish et al. 2018,
"An Empirical Model of Large-Batch Training", arXiv 1812.06162, Appendix A).

Σ is the per-example gradient covariance and G the true gradient. A gradient averaged over B
examples has E|G_B|² = |G|² + tr(Σ)/B, so the squared norms at two batch sizes b < B give the
unbiased estimates

    |G|²  ≈ (B·|G_B|² − b·|G_b|²) / (B − b)
    tr(Σ) ≈ (|G_b|² − |G_B|²) / (1/b − 1/B)

In the harness b is the micro-batch of one rank (|G_b|² the mean over the step's micro-batches
and ranks of their gradients' squared norms, read by tensor hooks before accumulation and
before DDP's all-reduce) and B the global batch (|G_B|² the squared norm of the gradient the
optimizer steps with). Each estimate is noisy from one step to the next; as the paper does, the
two are smoothed separately (exponential moving averages) and B_simple is the ratio of the
averages. B_simple predicts the critical batch B_noise (their §2.2): up to about B_simple,
doubling the batch halves the steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def two_batch(small_sq: float, big_sq: float, b_small: int, b_big: int) -> tuple[float, float]:
    """``(|G|², tr Σ)`` estimated from ``small_sq`` = |G_b|² (mean over batches of size
    ``b_small``) and ``big_sq`` = |G_B|² (their mean, batch ``b_big``)."""
    if b_big <= b_small:
        return math.nan, math.nan
    grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return grad_sq, trace


@dataclass
class NoiseScale:
    """The smoothed estimates: EMAs of |G|² and tr Σ with weight ``decay`` on the past (the
    first value starts each), and B_simple = EMA(tr Σ)/EMA(|G|²). Plain floats, saved in the
    run's checkpoints so that a resumed run continues the same averages."""

    grad_sq: float | None = None
    trace: float | None = None

    def update(self, grad_sq: float, trace: float, decay: float) -> float:
        """Fold in one step's estimates (skipped when not finite); returns B_simple."""
        if math.isfinite(grad_sq) and math.isfinite(trace):
            if self.grad_sq is None or self.trace is None:
                self.grad_sq, self.trace = grad_sq, trace
            else:
                self.grad_sq = decay * self.grad_sq + (1 - decay) * grad_sq
                self.trace = decay * self.trace + (1 - decay) * trace
        if self.grad_sq is None or self.trace is None or self.grad_sq <= 0:
            return math.nan
        return self.trace / self.grad_sq
