"""Verdicts that know their design (issue 20): the one vocabulary in which an analysis states an
answer, and the rules that refuse an answer the design cannot support.

An answer is one of :class:`Answer`:

* ``supported`` / ``refuted``: the data decide the claim, in the direction it predicts or the
  other. A "no effect" claim is *supported* only when the interval lies inside ±``resolution``
  (equivalence, not absence of evidence); it is *refuted* when the interval excludes 0.
* ``unresolved``: the interval is too wide to decide. The verdict carries the minimum
  detectable effect of the seeds used (:func:`mde`: the mean a two-sided 5% paired t-test
  detects with 80% power at the observed spread), so a reader knows what more seeds would buy.
* ``censored``: what the claim is about (an optimum, a stability edge) sits at the grid's first
  or last value, so the grid cannot place it; the verdict says which end and what to extend.
* ``depends on the fit``: two reasonable fits (e.g. absolute and relative error models) order
  the variants differently; no ordering is stated.

Each :class:`Verdict` has an ``id``; the README's claim table is generated from verdicts and
its prose cites them as ``` `id: answer` ``` spans, which ``python -m ablations.analysis.readme
check`` compares with the generated table (:func:`cited`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.optimize
import scipy.stats

from ablations.analysis import stats


class Answer(StrEnum):
    SUPPORTED = "supported"
    REFUTED = "refuted"
    UNRESOLVED = "unresolved"
    CENSORED = "censored"
    DEPENDS_ON_FIT = "depends on the fit"


@dataclass(frozen=True)
class Verdict:
    """One claim's answer and the evidence it rests on (plain words, numbers included)."""

    id: str
    claim: str
    answer: Answer
    evidence: str
    #: the minimum detectable effect of the seeds used (``unresolved`` paired comparisons)
    mde: float | None = None
    #: what to run to turn ``censored``/``unresolved`` into an answer
    extend: str | None = None


def mde(
    differences: Sequence[float] | np.ndarray, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The minimum detectable mean of paired ``differences`` at their observed spread s: the
    true mean δ·s/√n at which the two-sided level-``alpha`` one-sample t-test with n − 1 degrees
    of freedom rejects with probability ``power`` (noncentral t with noncentrality δ, solved
    exactly; the textbook (t_{1−α/2} + t_{power}) approximation is 4% low at n = 3). NaN below
    2 values."""
    x = np.asarray(differences, dtype=float)
    n = len(x)
    if n < 2:
        return math.nan
    df, crit = n - 1, scipy.stats.t.ppf(1 - alpha / 2, n - 1)

    def short(delta: float) -> float:
        nct = scipy.stats.nct
        # the wrong-sign tail underflows to NaN far out, where it is 0
        wrong = float(np.nan_to_num(nct.cdf(-crit, df, delta)))
        return float(nct.sf(crit, df, delta)) + wrong - power

    # the normal-approximation δ = t_{1−α/2} + t_{power} is a few % short: 2x brackets it
    guess = crit + scipy.stats.t.ppf(power, df)
    delta = scipy.optimize.brentq(short, 0.0, 2 * guess)
    return float(delta * x.std(ddof=1) / math.sqrt(n))


def paired(
    id: str,
    claim: str,
    differences: Sequence[float] | np.ndarray,
    predicted: str,
    *,
    resolution: float = 0.01,
) -> Verdict:
    """The verdict on per-seed paired ``differences`` (intervention − reference), for a claim
    that predicts them ``"lower"`` (< 0), ``"higher"`` (> 0) or ``"none"`` (|Δ| < resolution).
    95% Student-t interval; fewer than 2 seeds is unresolved."""
    if predicted not in ("lower", "higher", "none"):
        raise ValueError(f"predicted: expected lower, higher or none, got {predicted!r}")
    x = np.asarray(differences, dtype=float)
    mean, low, high = stats.t_interval(x)
    detectable = mde(x)
    evidence = f"Δ {mean:+.4f} [{low:+.4f}, {high:+.4f}], {len(x)} seeds"
    if not (np.isfinite(low) and np.isfinite(high)):
        return Verdict(id, claim, Answer.UNRESOLVED, evidence, detectable, "at least 2 seeds")
    if predicted == "none":
        if -resolution < low and high < resolution:
            return Verdict(id, claim, Answer.SUPPORTED, evidence + f", inside ±{resolution:g}")
        if low > 0 or high < 0:
            return Verdict(id, claim, Answer.REFUTED, evidence)
    elif (predicted == "lower" and high < 0) or (predicted == "higher" and low > 0):
        return Verdict(id, claim, Answer.SUPPORTED, evidence)
    elif low > 0 or high < 0:
        return Verdict(id, claim, Answer.REFUTED, evidence)
    seeds = _seeds_for(x, resolution if predicted == "none" else abs(mean))
    more = f"about {seeds} seeds for this spread" if seeds else "more seeds"
    return Verdict(
        id, claim, Answer.UNRESOLVED, evidence + f", MDE {detectable:.4f}", detectable, more
    )


def _seeds_for(x: np.ndarray, effect: float) -> int | None:
    """The smallest n whose MDE at ``x``'s spread is below ``effect`` (None if over 64)."""
    s = float(np.std(x, ddof=1))
    if not (effect > 0 and np.isfinite(s) and s > 0):
        return None
    for n in range(2, 65):
        if mde(_spread(s, n)) < effect:
            return n
    return None


def _spread(s: float, n: int) -> np.ndarray:
    """``n`` values whose sample standard deviation is ``s``."""
    z = np.linspace(-1.0, 1.0, n)
    return z * s / z.std(ddof=1)


def optimum(id: str, claim: str, curve: Mapping[float, float]) -> Verdict | None:
    """``censored`` when the best (lowest) value of ``curve`` (grid value -> loss) sits at the
    grid's first or last value, saying which end to extend; None when the optimum is inside
    (the grid supports whatever the claim says about it)."""
    finite = {k: v for k, v in curve.items() if np.isfinite(v)}
    if not finite:
        return Verdict(id, claim, Answer.CENSORED, "no finite value", extend="the whole grid")
    grid = sorted(curve)
    best = min(finite, key=finite.get)
    if len(grid) > 1 and best in (grid[0], grid[-1]):
        end = "first" if best == grid[0] else "last"
        return Verdict(
            id,
            claim,
            Answer.CENSORED,
            f"the best value is at the grid's {end} point ({best:g})",
            extend=f"extend the grid {'down' if end == 'first' else 'up'} from {best:g}",
        )
    return None


def edge_order(
    id: str,
    claim: str,
    edge: Mapping[str, float | str],
    reference: Mapping[str, float | str],
    predicted: str,
    *,
    finest: float = 2**0.25,
) -> Verdict:
    """Compare the stability edge of a curve with the reference curve's (dicts of
    :func:`ablations.studies.regime.lr.stability_edge`: ``max_trained_lr``,
    ``first_failed_lr``, ``edge``). Each edge is known as an interval (max trained, first
    failed]; ``predicted`` is ``"lower"`` (the curve fails at a smaller lr) or ``"same"``.

    Censored when either edge lies past an end of the grid. Disjoint intervals order the
    edges. Identical intervals say the edges differ by less than the interval: when its ratio
    is at most ``finest`` (the resolution the claim is tested at, a 2^(1/4) lr step) the edges
    are the same at that resolution; a coarser interval is unresolved (extend: lrs inside it).
    Overlapping, different intervals (different grids) are unresolved too."""
    if predicted not in ("lower", "same"):
        raise ValueError(f"predicted: expected lower or same, got {predicted!r}")
    for who, e in (("the curve", edge), ("the reference", reference)):
        if e["edge"] != "bracketed":
            up = e["edge"] == "censored above"
            lr = e["max_trained_lr"] if up else e["first_failed_lr"]
            return Verdict(
                id,
                claim,
                Answer.CENSORED,
                f"{who}'s edge is {e['edge']} ({'no lr failed' if up else 'the lowest lr failed'})",
                extend=f"extend lr {'up' if up else 'down'} from {lr:g}",
            )
    mine = (float(edge["max_trained_lr"]), float(edge["first_failed_lr"]))
    ref = (float(reference["max_trained_lr"]), float(reference["first_failed_lr"]))
    evidence = f"edge ({mine[0]:.3g}, {mine[1]:.3g}] vs reference ({ref[0]:.3g}, {ref[1]:.3g}]"
    lower, higher = mine[1] <= ref[0] * (1 + 1e-9), mine[0] >= ref[1] * (1 - 1e-9)
    if lower or higher:
        ok = predicted == "lower" and lower
        return Verdict(id, claim, Answer.SUPPORTED if ok else Answer.REFUTED, evidence)
    # 1e-3: the grid's lrs are written to 5 digits
    if np.allclose(mine, ref) and mine[1] / mine[0] <= finest * (1 + 1e-3):
        answer = Answer.SUPPORTED if predicted == "same" else Answer.REFUTED
        return Verdict(id, claim, answer, evidence + f": equal within a ×{finest:.3g} lr step")
    return Verdict(
        id,
        claim,
        Answer.UNRESOLVED,
        evidence + f": not separated at this grid's resolution (×{mine[1] / mine[0]:.3g})",
        extend=f"lrs inside ({min(mine[0], ref[0]):.3g}, {max(mine[1], ref[1]):.3g}]",
    )


def ordering(
    id: str, claim: str, fits: Mapping[str, Mapping[str, float]], predicted: Sequence[str]
) -> Verdict:
    """The verdict on an ordering of variants by a fitted quantity (e.g. B_noise), under
    several fits (fit name -> variant -> value, larger first). ``depends on the fit`` when the
    fits order the variants differently; otherwise supported when their common ordering puts
    ``predicted`` (variant names, largest first) in that order, refuted when not."""
    orders = {
        name: tuple(v for v in sorted(values, key=values.get, reverse=True) if v in predicted)
        for name, values in fits.items()
    }
    shown = "; ".join(f"{name}: {' > '.join(o)}" for name, o in orders.items())
    if len(set(orders.values())) > 1:
        return Verdict(
            id, claim, Answer.DEPENDS_ON_FIT, shown, extend="a design on which the fits agree"
        )
    (order,) = set(orders.values())
    answer = Answer.SUPPORTED if list(order) == list(predicted) else Answer.REFUTED
    return Verdict(id, claim, answer, shown)


#: A cited verdict in prose: a code span ``id: answer``.
CITATION = re.compile(
    r"`([A-Za-z0-9][\w.\-]*): (" + "|".join(re.escape(a.value) for a in Answer) + r")`"
)


def cited(text: str) -> list[tuple[str, str]]:
    """The ``(id, answer)`` pairs cited in ``text`` as ``` `id: answer` ``` code spans."""
    return CITATION.findall(text)


def check_citations(text: str, verdicts: Mapping[str, str]) -> list[str]:
    """One line per citation in ``text`` whose verdict is unknown or has another answer in
    ``verdicts`` (id -> answer, the generated ones)."""
    problems = []
    for id, answer in cited(text):
        if id not in verdicts:
            problems.append(f"`{id}: {answer}` cites a verdict no generated table gives")
        elif verdicts[id] != answer:
            problems.append(f"`{id}: {answer}` but the generated verdict is {verdicts[id]!r}")
    return problems
