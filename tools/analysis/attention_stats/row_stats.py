"""Row statistics of attention matrices (..., Nq, Nk) whose rows sum to one, and the per-image meter."""
import math
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import torch

EPS = 1e-12


def row_cosine(a: torch.Tensor, b: torch.Tensor, centre: bool = False) -> torch.Tensor:
    a, b = a.double(), b.double()
    if centre:
        a = a - a.mean(dim=-1, keepdim=True)
        b = b - b.mean(dim=-1, keepdim=True)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return ((a * b).sum(dim=-1) / den.clamp_min(EPS)).clamp(-1, 1)


def row_tv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a.double() - b.double()).abs().sum(dim=-1)


def row_entropy_norm(p: torch.Tensor) -> torch.Tensor:
    n = p.shape[-1]
    p = p.double()
    h = -(p * p.clamp_min(1e-300).log()).sum(dim=-1)
    return h / math.log(n) if n > 1 else torch.zeros_like(h)


def row_cos_to_uniform(p: torch.Tensor) -> torch.Tensor:
    return row_cosine(p, torch.ones_like(p))


def density_stats(p: torch.Tensor) -> Dict[str, float]:
    return {
        'entropy_norm': row_entropy_norm(p).mean().item(),
        'max_prob': p.amax(dim=-1).double().mean().item(),
        'cos_to_uniform': row_cos_to_uniform(p).mean().item(),
    }


def pooled_stats(square: torch.Tensor) -> Dict[str, float]:
    """Self-affinity of (B, heads, K, K) attention pooled onto the key grid."""
    from vitattn_mm.models.losses.diagonality_loss import diagonality_terms
    k = square.shape[-1]
    s = square.double()
    diag = s.diagonal(dim1=-2, dim2=-1)
    off = s.masked_fill(torch.eye(k, dtype=torch.bool), float('-inf')).amax(dim=-1) if k > 1 else diag * 0
    dominance, asymmetry = diagonality_terms(square.float())
    return {
        'pooled_diag_mean': diag.mean().item(),
        'pooled_offdiag_max': off.mean().item(),
        'pooled_diag_dominant_frac': (diag >= off).double().mean().item(),
        'pooled_dominance': dominance.item(),
        'pooled_asymmetry': asymmetry.item(),
        'pooled_uniform_level': 1.0 / k,
    }


class Meter:
    """Per-image values of every (variant, stage, layer, ref_layer, kind, metric), averaged at the end."""

    def __init__(self):
        self.values: 'OrderedDict[tuple, List[float]]' = OrderedDict()

    def add(self, variant: str, stage: int, layer: int, ref_layer, kind: str, stats: Dict[str, float]) -> None:
        for metric, value in stats.items():
            self.values.setdefault((variant, stage, layer, ref_layer, kind, metric), []).append(float(value))

    def rows(self) -> List[dict]:
        out = []
        for (variant, stage, layer, ref, kind, metric), vals in self.values.items():
            arr = np.asarray(vals, dtype=np.float64)
            out.append(dict(variant=variant, stage=stage, layer=layer, ref_layer='' if ref is None else ref,
                            kind=kind, metric=metric, value=float(arr.mean()), std=float(arr.std()),
                            n=len(vals)))
        return out

    def get(self, variant: str, stage: int, layer: int, metric: str) -> Optional[float]:
        for (v, s, l, _, _, m), vals in self.values.items():
            if (v, s, l, m) == (variant, stage, layer, metric):
                return float(np.mean(vals))
        return None
