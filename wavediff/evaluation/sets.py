"""Distances between two sets of feature vectors: Fréchet distance, KID, and diversity.

Fréchet distance fits a Gaussian to each set and measures
|μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½), all in float64. The trace of the matrix square root
is computed through symmetric eigendecompositions, tr((Σ₁ Σ₂)^½) = Σ √λ(Σ₁^½ Σ₂ Σ₁^½): the
same number scipy.linalg.sqrtm gives, without its complex parts on nearly singular
covariances (few frames, silent bands); eigenvalues that rounding pushes below 0 are 0.

KID is the unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y / d + 1)³ over random
subsets (Bińkowski et al.), averaged over subsets. Unlike FD it has no bias in the set size,
so small per-genre sets can be compared with it. The kernel needs features of unit scale, so
both sets are centred on the reference mean and divided by the reference's RMS spread over
all dimensions: one scale, so a nearly constant band (the empty top of an upsampled clip)
is not blown up into the loudest dimension.
"""

from __future__ import annotations

import math

import numpy as np

KID_SUBSETS = 20
KID_SUBSET_SIZE = 500


def _matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must be (vectors, dims) with at least 2 vectors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds non-finite values")
    return x


def gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (vectors, dims) features, float64."""
    x = _matrix(x, "features")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((a + a.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians (see the module docstring); ≥ 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"Gaussians of different sizes: means {mu1.shape}, {mu2.shape}; covariances {sigma1.shape}, {sigma2.shape}"
        )
    root = _psd_sqrt(sigma1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sigma2 @ root), 0, None)).sum()
    distance = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * cross)
    return max(distance, 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets a and b (vectors, dims)."""
    return frechet_from_stats(*gaussian(a), *gaussian(b))


def kernel_inception_distance(
    a: np.ndarray,
    reference: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> dict[str, float]:
    """{"mean", "std"} of the unbiased MMD² between `a` and `reference` over random subsets.

    Subsets hold min(subset_size, len(a), len(reference)) vectors of each set, drawn without
    replacement from a generator seeded by `seed`, so the number is repeatable. Identical
    sets measure about 0 (the estimate is unbiased, so it can dip just below).
    """
    a, reference = _matrix(a, "features"), _matrix(reference, "reference features")
    if a.shape[1] != reference.shape[1]:
        raise ValueError(f"feature sets of different widths: {a.shape[1]} and {reference.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    centre, scale = reference.mean(0), math.sqrt(float(reference.var(0).mean())) or 1.0
    x, y = (a - centre) / scale, (reference - centre) / scale
    m = min(subset_size, len(x), len(y))
    d = x.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((xs, xs), (ys, ys), (xs, ys)))
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def mean_pairwise_distance(vectors: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs, divided by √dims (an RMS difference per
    dimension: in dB for log-mel embeddings); NaN for fewer than 2 vectors."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"vectors must be (vectors, dims), got shape {x.shape}")
    if len(x) < 2:
        return math.nan
    squared = (x**2).sum(1)
    gram = np.clip(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0, None)
    upper = np.triu_indices(len(x), 1)
    return float(np.sqrt(gram[upper]).mean() / math.sqrt(x.shape[1]))


def diversity(vectors: np.ndarray, groups: list) -> float:
    """Mean pairwise distance within each group of `vectors` (a label per vector), averaged
    over groups of at least 2 (weighted by their pairs); NaN when no group has 2.

    Grouping by condition asks whether loops made for the same genre, tempo and length
    differ from each other: a collapsed model makes them all alike.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if len(groups) != len(x):
        raise ValueError(f"{len(x)} vectors but {len(groups)} group labels")
    total = pairs = 0.0
    for label in dict.fromkeys(groups):
        members = x[[i for i, g in enumerate(groups) if g == label]]
        k = len(members) * (len(members) - 1) / 2
        if k:
            total += mean_pairwise_distance(members) * k
            pairs += k
    return total / pairs if pairs else math.nan
