"""Choosing which audio feed-forward units to keep when narrowing the conformer.

The audio encoder was not MatFormer-trained, so "the first N units" means nothing. We keep, in each
feed-forward module separately, the N units with the largest weight-magnitude product
`||W1[u, :]||_2 * ||W2[:, u]||_2`: for a unit-norm input, it bounds how much unit u can add to the
module's output, and it needs no data. Transformers hard-codes the width 4H, so the child keeps the
full-size tensors: kept units are moved to the front (a permutation of units, which changes nothing)
and the rest are zeroed (silu(0) * 0 adds nothing). `config.json`'s `matslice.audio.ffn_dim` records
N, so the exporter can physically drop every unit past it.
"""

from __future__ import annotations

import numpy as np

CRITERION = "per-module weight-magnitude product ||W1[u,:]||_2 * ||W2[:,u]||_2, largest kept"


def unit_order(w1: np.ndarray, w2: np.ndarray, keep: int) -> np.ndarray:
    """A permutation of units: the `keep` most important first (in their original order), then the rest."""
    score = np.linalg.norm(w1.astype(np.float64), axis=1) * np.linalg.norm(w2.astype(np.float64), axis=0)
    ranked = np.argsort(-score, kind="stable")
    kept = np.sort(ranked[:keep])
    dropped = np.sort(ranked[keep:])
    return np.concatenate([kept, dropped])
