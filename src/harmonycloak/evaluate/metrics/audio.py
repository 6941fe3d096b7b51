"""Audio metrics: Fréchet Audio Distance and the embedding shift of seed 003.

**FAD** (Kilgour, Zuluaga, Roblek and Sharifi 2019, "Fréchet Audio Distance: A
reference-free metric for evaluating music enhancement algorithms", Interspeech; the
HarmonyCloak paper's main audio metric) fits a Gaussian to the embeddings of two sets of
audio and measures the Fréchet (2-Wasserstein) distance between the two Gaussians:

    FAD = ||mu_g - mu_r||^2 + tr(S_g + S_r - 2 (S_g S_r)^(1/2))

where ``mu``/``S`` are the mean and covariance of the generated (``g``) and reference
(``r``) embeddings. It is 0 for identical statistics and grows with any difference in
location or spread; higher is worse. The value depends on the embedding: Kilgour et al.
use VGGish; we use a pluggable :class:`AudioEmbedder`, either the contrastive music
encoder trained on the user's own music (:class:`ContrastiveEmbedder`, no download) or a
local CLAP checkpoint (:class:`ClapEmbedder`). Compare FADs only under one embedder.

**Embedding shift** (seed 003, "Music Unlearnable for MusicLDM"): how far protection
moves a clip's embedding, as cosine similarity (target < 0.3) and normalized L2 distance
``Δe`` (target > 0.5); :func:`embedding_shift` wraps
:func:`harmonycloak.targets.embedding.embedding_shift`, the function the embedding-shift
target reports with.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from harmonycloak.errors import InputError

__all__ = [
    "AudioEmbedder",
    "ClapEmbedder",
    "ContrastiveEmbedder",
    "embedding_shift",
    "embedding_stats",
    "fad",
    "frechet_distance",
]


# ---------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, *,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2).

        d^2 = ||mu1 - mu2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2))

    (Dowson and Landau 1982; as FID, Heusel et al. 2017, and FAD, Kilgour et al. 2019.)
    The matrix square root is :func:`scipy.linalg.sqrtm`. The usual fix of the reference
    implementations (``pytorch-fid``, Google's ``frechet_audio_distance``): when the
    product is singular and the root comes out non-finite, ``eps`` is added to both
    diagonals and the root taken again; an imaginary part from rounding is dropped (a
    large one raises). Rounding can make d^2 slightly negative for (near-)identical
    inputs: the result is clipped at 0. Returns a float (the squared distance, as FAD
    reports it). Inputs: ``mu`` ``[d]``, ``cov`` ``[d, d]`` (1-D: ``[1]`` and
    ``[1, 1]``; scalars are taken as 1-D).
    """
    m1, m2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    c1, c2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or c1.shape != (d, d) or c2.shape != (d, d):
        raise InputError(f"frechet_distance: means {m1.shape}, {m2.shape} and covariances "
                         f"{c1.shape}, {c2.shape} do not fit one dimension; give mu [d] and "
                         "cov [d, d] from embedding_stats")
    if not all(np.all(np.isfinite(a)) for a in (m1, m2, c1, c2)):
        raise InputError("frechet_distance: the statistics hold NaN or infinite values")
    from scipy import linalg

    covmean = linalg.sqrtm(c1 @ c2)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((c1 + offset) @ (c2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(covmean).max()))
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3 * scale):
            raise InputError("frechet_distance: the covariance product has a large imaginary "
                             "square root (a covariance is not positive semi-definite); "
                             "compute them with embedding_stats")
        covmean = covmean.real
    diff = m1 - m2
    value = float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def embedding_stats(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` (unbiased, ``n - 1``) of ``[n, d]`` embeddings.

    Raises InputError for fewer than 2 rows (no covariance) or non-finite values.
    Float64.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2 or e.shape[1] < 1:
        raise InputError(f"embedding_stats: embeddings of shape {e.shape}; give [n, dim] with "
                         "at least 2 rows (FAD needs a covariance)")
    if not np.all(np.isfinite(e)):
        raise InputError("embedding_stats: the embeddings hold NaN or infinite values")
    return e.mean(axis=0), np.atleast_2d(np.cov(e, rowvar=False))


def fad(generated_embeddings: np.ndarray, reference_embeddings: np.ndarray) -> float:
    """Fréchet Audio Distance between two sets of embeddings ``[n, d]`` and ``[m, d]``.

    ``frechet_distance(*embedding_stats(generated), *embedding_stats(reference))``; 0 for
    identical sets. With fewer rows than dimensions the covariances are singular and the
    ``eps`` fix of :func:`frechet_distance` applies; FAD is biased upwards for small sets
    (Binkowski et al. 2018 for FID), so compare values computed from equal set sizes.
    """
    g, r = np.asarray(generated_embeddings), np.asarray(reference_embeddings)
    if g.ndim == 2 and r.ndim == 2 and g.shape[1] != r.shape[1]:
        raise InputError(f"fad: generated embeddings have {g.shape[1]} dimensions and the "
                         f"reference {r.shape[1]}; embed both with the same embedder")
    return frechet_distance(*embedding_stats(g), *embedding_stats(r))


# ---------------------------------------------------------------------------------------
# Embedding shift (seed 003)
# ---------------------------------------------------------------------------------------


def embedding_shift(clean_emb: Any, protected_emb: Any) -> dict[str, Any]:
    """Seed 003's embedding shift between clean and protected embeddings ``[n, d]`` (or ``[d]``).

    Returns the means over rows of ``"cosine"`` (cos(e, e'); target < 0.3) and
    ``"normalized_l2"`` (Δe = ||e' - e|| / ||e||; target > 0.5, scale-free, equal to the
    plain L2 distance for unit embeddings such as CLAP's), plus ``"l2"`` (plain
    ||e' - e||), ``"per_example"`` (lists of the three) and ``"meets_seed_targets"``
    (both targets met on average). Computed by
    :func:`harmonycloak.targets.embedding.embedding_shift` (numpy or torch input).
    """
    import torch

    from harmonycloak.targets.embedding import (
        SEED_SHIFT_TARGET,
        SEED_SIMILARITY_TARGET,
    )
    from harmonycloak.targets.embedding import embedding_shift as shift_per_row

    def as_tensor(x: Any) -> Any:
        t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        return t.to(torch.float64)

    clean, protected = as_tensor(clean_emb), as_tensor(protected_emb)
    if clean.shape != protected.shape or clean.dim() not in (1, 2) or clean.numel() == 0:
        raise InputError(f"embedding_shift: clean {tuple(clean.shape)} and protected "
                         f"{tuple(protected.shape)} embeddings must have one shape [n, dim]")
    rows = shift_per_row(clean.reshape(-1, clean.shape[-1]),
                         protected.reshape(-1, protected.shape[-1]))
    cosine = float(rows["cosine_similarity"].mean())
    normalized = float(rows["normalized_l2"].mean())
    return {
        "cosine": cosine,
        "normalized_l2": normalized,
        "l2": float(rows["l2"].mean()),
        "per_example": {"cosine": rows["cosine_similarity"].tolist(),
                        "normalized_l2": rows["normalized_l2"].tolist(),
                        "l2": rows["l2"].tolist()},
        "meets_seed_targets": bool(cosine < SEED_SIMILARITY_TARGET
                                   and normalized > SEED_SHIFT_TARGET),
    }


# ---------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------


@runtime_checkable
class AudioEmbedder(Protocol):
    """Maps clips to one embedding each, for FAD and the embedding shift.

    ``embed(samples, sample_rate_hz)``: ``samples`` a float tensor ``[n, channels,
    samples]`` (numpy accepted) at ``sample_rate_hz``; returns float64 numpy ``[n, dim]``.
    ``name`` identifies the embedder in reports (FADs under different embedders do not
    compare); ``embedding_dim`` is ``dim``.
    """

    name: str
    embedding_dim: int

    def embed(self, samples: Any, sample_rate_hz: int) -> np.ndarray: ...


class _EncoderEmbedder:
    """An :class:`AudioEmbedder` over an encoder of :mod:`harmonycloak.targets.embedding`.

    Each clip is mixed to mono, resampled to the encoder's rate and cut into the
    encoder's windows exactly as :class:`~harmonycloak.targets.embedding.EmbeddingShiftTarget`
    does for protection (evenly spread windows of ``window_s``, default the encoder's own
    input length); the clip's embedding is the mean of its window embeddings. Runs
    without gradients, ``batch_size`` clips at a time. Clips shorter than 0.25 s are
    refused (InputError).
    """

    kind = "encoder"

    def __init__(self, encoder: Any, *, window_s: float | None = None, batch_size: int = 8,
                 device: str = "cpu", name: str | None = None) -> None:
        if batch_size < 1:
            raise InputError(f"{type(self).__name__}: batch_size={batch_size}; use 1 or more")
        self.encoder = encoder
        self.window_s = window_s
        self.batch_size = int(batch_size)
        self.device = device
        self.embedding_dim = int(encoder.embedding_dim)
        self.name = name or f"{self.kind}-{self.embedding_dim}d"
        self._targets: dict[int, Any] = {}

    def _target(self, sample_rate_hz: int) -> Any:
        from harmonycloak.targets.embedding import EmbeddingShiftTarget

        if sample_rate_hz not in self._targets:
            self._targets[sample_rate_hz] = EmbeddingShiftTarget(
                self.encoder, sample_rate_hz=sample_rate_hz, window_s=self.window_s,
                device=self.device)
        return self._targets[sample_rate_hz]

    def embed(self, samples: Any, sample_rate_hz: int) -> np.ndarray:
        """Clip embeddings ``[n, dim]`` (float64) of ``samples [n, channels, samples]``."""
        import torch

        x = samples if isinstance(samples, torch.Tensor) else torch.from_numpy(np.asarray(samples))
        if x.dim() != 3 or x.shape[0] == 0 or not x.is_floating_point():
            raise InputError(f"{self.name}: clips of shape {tuple(x.shape)}; give float audio "
                             "[n, channels, samples] (x[None] for one clip)")
        if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, int) \
                or not 8000 <= sample_rate_hz <= 192000:
            raise InputError(f"{self.name}: sample rate {sample_rate_hz!r}; give a whole number "
                             "of Hz from 8000 to 192000")
        target = self._target(sample_rate_hz)
        out = []
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch_size):
                windows = target.embed(x[start:start + self.batch_size].float())  # [b, w, d]
                out.append(windows.mean(dim=1).to("cpu", torch.float64))
        return torch.cat(out).numpy()


class ContrastiveEmbedder(_EncoderEmbedder):
    """FAD embeddings from the self-trained contrastive music encoder.

    Wraps :class:`harmonycloak.targets.embedding.ContrastiveMusicEncoder` (trained with
    :func:`~harmonycloak.targets.embedding.train_contrastive` on the user's own music; no
    download). The embedding is the encoder's projection output, averaged over its
    windows. :meth:`load` reads an encoder directory written by its ``save``.
    """

    kind = "contrastive"

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "cpu",
             **options: Any) -> ContrastiveEmbedder:
        """The encoder in ``directory`` (ModelLoadError when missing or of another kind)."""
        from harmonycloak.targets.embedding import ContrastiveMusicEncoder

        return cls(ContrastiveMusicEncoder.load(directory, device=device), device=device,
                   **options)


class ClapEmbedder(_EncoderEmbedder):
    """FAD embeddings from a local CLAP checkpoint (``transformers`` ``ClapModel``).

    Wraps :class:`harmonycloak.targets.clap.ClapEncoder`: 48 kHz mono, 10 s windows,
    unit-norm audio embeddings (what MusicLDM conditions on), averaged over windows.
    :meth:`load` reads any local ClapModel checkpoint folder (e.g. a download of
    ``laion/clap-htsat-unfused``); nothing is fetched.
    """

    kind = "clap"

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "cpu",
             **options: Any) -> ClapEmbedder:
        """The CLAP audio tower in ``directory`` (ModelLoadError naming the missing files)."""
        from harmonycloak.targets.clap import ClapEncoder

        return cls(ClapEncoder.load(directory, device=device), device=device, **options)
