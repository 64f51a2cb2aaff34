"""The verdict rules: what a paired comparison of two settings may state (ARCHITECTURE.md, "Verdict rules").

Reader: every paired table (:mod:`heritage.report.paired`) and the paper's text
(:mod:`heritage.report.publish` quotes the rules). :func:`decide` is the only source of "A better" /
"B better": at least 3 paired folds, a 95% t interval of the mean difference that excludes 0, and
both sides above their all-Clean baseline on every paired fold; otherwise "not supported" and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

NOT_COMPARED = "not compared"
CONFIDENCE = 0.95
MIN_PAIRED_UNITS = 3  # fewer paired folds give an interval too unstable to state a verdict on
A_BETTER, B_BETTER, NOT_SUPPORTED = "A better", "B better", "not supported"


@dataclass(frozen=True)
class PairedDifference:
    """Mean of paired differences A - B with a two-sided t confidence interval."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    confidence: float = CONFIDENCE

    @property
    def testable(self) -> bool:
        """An interval exists (two pairs or more)."""
        return self.n >= 2

    @property
    def excludes_zero(self) -> bool:
        return self.testable and (self.ci_low > 0 or self.ci_high < 0)

    def interval(self, scale: float = 100.0) -> str:
        return f"{self.confidence:.0%} CI [{self.ci_low * scale:+.2f}, {self.ci_high * scale:+.2f}]"


@dataclass(frozen=True)
class Verdict:
    """What a paired comparison of A and B may state (see :func:`decide`)."""

    difference: PairedDifference
    above_a: int | None  # paired folds on which A's mIoU is above its all-Clean mIoU; None: not recorded
    above_b: int | None
    label: str  # A_BETTER, B_BETTER or NOT_SUPPORTED
    reasons: tuple[str, ...] = ()  # why not supported
    compared: bool = True  # False: the pair may not be compared at all (``decide(blocked=...)``), no numbers

    @property
    def supported(self) -> bool:
        return self.label != NOT_SUPPORTED

    @property
    def cell(self) -> str:
        """The table cell: "A better", "B better" or "not supported: <reasons>"."""
        return self.label if self.supported else f"{NOT_SUPPORTED}: {'; '.join(self.reasons)}"

    def statement(self, a: str, b: str, scale: float = 100.0, unit: str = "mIoU points") -> str:
        """One sentence naming A and B; it says "beats" only for a supported verdict."""
        d = self.difference
        if not self.compared:
            return f"{a} vs {b}: {NOT_SUPPORTED}, {NOT_COMPARED} ({'; '.join(self.reasons)})"
        if self.supported:
            winner, loser = (a, b) if self.label == A_BETTER else (b, a)
            return (f"{winner} beats {loser} by {abs(d.mean) * scale:.2f} {unit} ({d.interval(scale)}, "
                    f"n={d.n} paired folds, both above their all-Clean baseline on every paired fold)")
        numbers = "no paired folds" if d.n == 0 else (
            f"mean A-B {d.mean * scale:+.2f} {unit}" + (f", {d.interval(scale)}" if d.testable else "") + f", n={d.n}")
        return f"{a} vs {b}: {NOT_SUPPORTED} ({'; '.join(self.reasons)}); {numbers}"


def decide(miou_a: Sequence[float], miou_b: Sequence[float], clean_a: Sequence[float], clean_b: Sequence[float],
           confidence: float = CONFIDENCE, *, blocked: Sequence[str] = (),
           run_miou: tuple[Sequence[float], Sequence[float]] | None = None) -> Verdict:
    """The verdict rules, the only place a table's "A better" / "B better" comes from.

    The inputs are aligned per paired fold: mIoU of A and of B, and the all-Clean mIoU of A's and of
    B's test pixels (``test.all_clean_miou``). "A better" (or "B better") needs all of:

    1. at least MIN_PAIRED_UNITS (3) paired folds;
    2. a ``confidence`` t interval of the mean difference A - B that excludes 0;
    3. A and B each above their all-Clean baseline on every paired fold (a model that does not beat
       predicting Clean everywhere has learnt nothing its ranking could mean).

    Otherwise the label is NOT_SUPPORTED with every failed rule as a reason: "both below the
    all-Clean baseline" (or "A below ..." / "B below ... on k of n paired folds"; below = not above),
    "no all-Clean baseline recorded for A", "2 paired folds: too few", "interval includes 0".

    ``blocked``: reasons the two may not be compared at all (RQ4: a different training budget); the
    verdict is then NOT_SUPPORTED with those reasons, ``compared`` False and no difference computed.
    ``run_miou``: the runs' mIoU of A and B per paired fold, for rule 3, when the scores compared are
    not the mIoU (a class's IoU): the all-Clean rule is about the run, whatever score is compared.
    """
    if blocked:
        nothing = PairedDifference(0, math.nan, math.nan, math.nan, confidence)
        return Verdict(nothing, None, None, NOT_SUPPORTED, tuple(blocked), compared=False)
    difference = paired_difference(miou_a, miou_b, confidence)
    n = difference.n
    checked_a, checked_b = run_miou if run_miou is not None else (miou_a, miou_b)
    above_a, above_b = _folds_above(checked_a, clean_a), _folds_above(checked_b, clean_b)
    reasons = []
    if n:
        reasons += [f"no all-Clean baseline recorded for {side}"
                    for side, above in (("A", above_a), ("B", above_b)) if above is None]
        short = [(side, above) for side, above in (("A", above_a), ("B", above_b)) if above is not None and above < n]
        if len(short) == 2 and all(above == 0 for _, above in short):
            reasons.append("both below the all-Clean baseline")
        else:
            reasons += [f"{side} below the all-Clean baseline" + (f" on {n - above} of {n} paired folds" if above else "")
                        for side, above in short]
    if n < MIN_PAIRED_UNITS:
        reasons.append(f"{n} paired fold{'' if n == 1 else 's'}: too few")
    if difference.testable and not difference.excludes_zero:
        reasons.append("interval includes 0")
    label = NOT_SUPPORTED if reasons else (A_BETTER if difference.mean > 0 else B_BETTER)
    return Verdict(difference, above_a, above_b, label, tuple(reasons))


def _folds_above(miou: Sequence[float], clean: Sequence[float]) -> int | None:
    clean = np.asarray(clean, dtype=float)
    if np.isnan(clean).any():
        return None
    return int((np.asarray(miou, dtype=float) > clean).sum())


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedDifference:
    """Paired differences ``a[i] - b[i]``: mean and t interval ``mean +- t(n-1) * sd / sqrt(n)``.

    With one pair the interval is undefined (NaN); with identical differences it has zero width.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must be two sequences of equal length, got {len(a)} and {len(b)}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.isnan(diff).any():
        raise ValueError("paired samples hold NaN values")
    n = len(diff)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan, math.nan, confidence)
    mean = float(diff.mean())
    if n < 2:
        return PairedDifference(n, mean, math.nan, math.nan, confidence)
    # scipy.stats.ttest_rel(a, b).confidence_interval() is this interval but warns on identical differences
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * diff.std(ddof=1) / math.sqrt(n))
    return PairedDifference(n, mean, mean - half, mean + half, confidence)
