"""The comparisons, on next-token log-probabilities: perplexity, KL divergence, top-1 agreement, cosine."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Next-token log-probabilities, computed in float64 (float32 loses the tails' mass)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def kl_rows(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(P || Q) in nats for each row of two log-probability arrays."""
    log_p, log_q = log_p.astype(np.float64), log_q.astype(np.float64)
    return np.maximum((np.exp(log_p) * (log_p - log_q)).sum(axis=-1), 0.0)


def divergence(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(mean KL(P_reference || P_other) in nats, top-1 agreement) over the rows of two logit arrays."""
    if reference.shape != other.shape:
        raise ValueError(f"logits {reference.shape} and {other.shape} do not line up")
    kl = kl_rows(log_softmax(reference), log_softmax(other))
    return float(kl.mean()), float((reference.argmax(axis=-1) == other.argmax(axis=-1)).mean())


@dataclass
class TextTally:
    """Running sums over scored positions, so windows can be compared one at a time."""

    positions: int = 0
    parent_nll: float = 0.0
    variant_nll: float = 0.0
    kl: float = 0.0
    agree: int = 0
    kl_per_position: list[float] = field(default_factory=list)

    def add(self, parent: np.ndarray, variant: np.ndarray, targets: np.ndarray) -> None:
        """`parent`/`variant`: [T, V] log-probs predicting `targets` [T]."""
        rows = np.arange(len(targets))
        self.parent_nll += float(-parent[rows, targets].astype(np.float64).sum())
        self.variant_nll += float(-variant[rows, targets].astype(np.float64).sum())
        self.kl += float(kl_rows(parent, variant).sum())
        self.agree += int((parent.argmax(-1) == variant.argmax(-1)).sum())
        self.positions += len(targets)

    def summary(self) -> dict[str, float | int]:
        n = max(self.positions, 1)
        return {
            "positions": self.positions,
            "parent_perplexity": float(np.exp(self.parent_nll / n)),
            "variant_perplexity": float(np.exp(self.variant_nll / n)),
            "kl_mean": self.kl / n,
            "top1_agreement": self.agree / n,
        }


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows."""
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12
    return float((num / den).mean())


NEAR_TIE = 0.1  # logits: a gap this small between the reference's top two is a rounding-level tie
MIN_EQUAL_BEFORE_TIE = 4  # a tie is forgiven only after this many equal steps


@dataclass(frozen=True)
class IdsMatch:
    """Two greedy decodes of one prompt compared step by step: how many steps, and where they first differ.

    Another runtime's greedy ids may part from the reference's where the reference's top two logits nearly tie
    (rounding decides), and after that the two texts differ for good. That is accepted only after
    MIN_EQUAL_BEFORE_TIE equal steps, and reported as such: a difference at step 0 says the runtimes disagree.
    """

    match: bool
    steps: int  # steps compared: equal ones, plus the one that differed
    first_difference: int | None
    near_tie: bool  # the match rests on a near tie at first_difference

    def describe(self) -> str:
        if self.first_difference is None:
            return f"ids match, {self.steps} steps compared" if self.match else f"lengths differ after {self.steps}"
        if self.near_tie:
            return f"ids match for {self.first_difference} steps, then part at a near tie"
        return f"ids differ at step {self.first_difference}"


def ids_match(got: list[int], want: list[int], gaps: list[float], near_tie: float = NEAR_TIE) -> IdsMatch:
    """Compare `got` with the reference `want`, whose top-2 logit gap at each step is `gaps`."""
    for step, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            tie = step >= MIN_EQUAL_BEFORE_TIE and gaps[step] < near_tie
            return IdsMatch(tie, step + 1, step, tie)
    steps = min(len(got), len(want))
    return IdsMatch(len(got) == len(want), steps, None, False)
