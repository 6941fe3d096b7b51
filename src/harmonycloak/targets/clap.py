"""LAION-CLAP's audio tower as an embedding-shift encoder, differentiable from the waveform.

MusicLDM conditions on CLAP audio embeddings (seed 003), so CLAP is the encoder whose
embedding the defence must move. The model is ``transformers``' HTSAT-based audio tower
(``ClapAudioModelWithProjection``: Swin-style transformer on a log-mel "image", then a
two-layer projection), loaded from a local directory: a full ``ClapModel`` checkpoint such
as ``laion/clap-htsat-unfused`` (only its audio weights are read) or an audio-only one.
Nothing is downloaded.

``ClapFeatureExtractor`` computes its log-mel features in numpy, which cuts the gradient.
:class:`ClapFrontEnd` is the same computation in torch (source:
``transformers/models/clap/feature_extraction_clap.py`` and ``audio_utils.spectrogram``):

1. 48 kHz mono waveform; ``max_samples = max_length_s · 48000`` (10 s).
2. Shorter input is padded to ``max_samples``: ``"repeatpad"`` tiles it
   ``floor(max / len)`` times and zero-pads the rest, ``"repeat"`` tiles it
   ``floor(max / len) + 1`` times and cuts, ``"pad"`` zero-pads.
3. Longer input: ``"rand_trunc"`` takes one random ``max_samples`` crop; ``"fusion"`` takes
   the log-mel of the whole input, three random ``chunk_frames = max // hop + 1`` frame
   crops from the first, middle and last third of the possible starts, and the whole
   log-mel shrunk bilinearly to ``chunk_frames`` frames: four channels, ``is_longer``.
   (An input at most one hop longer than ``max_samples`` is used whole, four times.)
4. Log-mel: Hann window (periodic) of ``fft_window_size`` (1024), hop 480, centred frames
   with reflect padding, power spectrum, mel filters — HTK without norm in ``"fusion"``
   mode, Slaney-scale with Slaney norm otherwise, between ``frequency_min`` and
   ``frequency_max`` (14 kHz) — then ``max(mel, 1e-10)`` and ``10·log10`` (no ``top_db``
   clipping: the extractor never passes it on). Features ``[channels, frames, mels]``.

Differences, on purpose: the random choices come from a ``torch.Generator`` (or explicit
``crop_starts``/``chunk_starts``) instead of numpy's global RNG, and ``is_longer`` says
whether an input really was longer (the extractor, in fusion mode, marks a random
example of an all-short batch as longer; that is a training trick for the fusion
layers, not part of the embedding). The fusion shrink uses ``num_mels`` where the
extractor hard-codes 64 (it fails for other sizes). Computation runs in the input's
dtype: in float64 the features equal the extractor's within 1e-5 dB, in float32 within
about 2e-3 dB.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harmonycloak.config import resolve_device
from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.targets.embedding import mel_filterbank, power_spectrogram

__all__ = ["ClapEncoder", "ClapFrontEnd", "ClapFrontEndConfig", "Truncation", "Padding"]

Truncation = Literal["fusion", "rand_trunc"]
Padding = Literal["repeatpad", "repeat", "pad"]

_MODEL_CONFIG = "config.json"
_PREPROCESSOR_CONFIG = "preprocessor_config.json"
_WEIGHTS = "model.safetensors"
_WEIGHTS_INDEX = "model.safetensors.index.json"
_EXPECTED = (f"{_MODEL_CONFIG} (a ClapModel or ClapAudioModelWithProjection config), "
             f"{_WEIGHTS} and {_PREPROCESSOR_CONFIG} (ClapFeatureExtractor)")
_FIX = ("download them once elsewhere, e.g. `huggingface-cli download "
        "laion/clap-htsat-unfused --local-dir DIR`, and give that DIR")
_INSTALL = "pip install 'transformers>=5'"
_MEL_FLOOR = 1e-10


@dataclass(frozen=True)
class ClapFrontEndConfig:
    """``ClapFeatureExtractor``'s settings (its defaults; see the module docstring).

    ``max_length_s`` is the model's input length; ``fft_samples`` is the extractor's
    ``fft_window_size``; ``min_hz``/``max_hz`` its ``frequency_min``/``frequency_max``.
    """

    sample_rate_hz: int = 48_000
    num_mels: int = 64
    fft_samples: int = 1024
    hop_samples: int = 480
    max_length_s: float = 10.0
    min_hz: float = 0.0
    max_hz: float = 14_000.0
    truncation: Truncation = "fusion"
    padding: Padding = "repeatpad"

    @property
    def max_samples(self) -> int:
        """Input length in samples (480,000 by default)."""
        return int(round(self.max_length_s * self.sample_rate_hz))

    @property
    def chunk_frames(self) -> int:
        """Frames of a ``max_samples`` input (1001 by default)."""
        return self.max_samples // self.hop_samples + 1

    def validate(self) -> None:
        """Raise InputError on settings the front end cannot compute."""
        if self.truncation not in ("fusion", "rand_trunc"):
            raise InputError(f"truncation={self.truncation!r}: use 'fusion' or 'rand_trunc'")
        if self.padding not in ("repeatpad", "repeat", "pad"):
            raise InputError(f"padding={self.padding!r}: use 'repeatpad', 'repeat' or 'pad'")
        for name in ("sample_rate_hz", "num_mels", "fft_samples", "hop_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"ClapFrontEndConfig.{name}={value!r}: must be a positive integer")
        if not 0 <= self.min_hz < self.max_hz <= self.sample_rate_hz / 2:
            raise InputError(f"ClapFrontEndConfig: band {self.min_hz}–{self.max_hz} Hz; use "
                             f"0 <= min_hz < max_hz <= {self.sample_rate_hz / 2}")
        if self.max_samples <= self.fft_samples // 2:
            raise InputError(f"ClapFrontEndConfig.max_length_s={self.max_length_s}: shorter than "
                             "half an FFT window; use the extractor's max_length_s (10)")

    @classmethod
    def from_feature_extractor(cls, extractor: Any) -> ClapFrontEndConfig:
        """The settings of a ``transformers.ClapFeatureExtractor``."""
        return cls(sample_rate_hz=int(extractor.sampling_rate),
                   num_mels=int(extractor.feature_size),
                   fft_samples=int(extractor.fft_window_size),
                   hop_samples=int(extractor.hop_length),
                   max_length_s=float(extractor.max_length_s),
                   min_hz=float(extractor.frequency_min), max_hz=float(extractor.frequency_max),
                   truncation=extractor.truncation, padding=extractor.padding)

    def to_feature_extractor(self) -> Any:
        """A ``transformers.ClapFeatureExtractor`` with these settings."""
        from transformers import ClapFeatureExtractor

        max_length_s: float = self.max_length_s
        if float(max_length_s).is_integer():
            max_length_s = int(max_length_s)
        return ClapFeatureExtractor(feature_size=self.num_mels, sampling_rate=self.sample_rate_hz,
                                    hop_length=self.hop_samples, max_length_s=max_length_s,
                                    fft_window_size=self.fft_samples,
                                    frequency_min=self.min_hz, frequency_max=self.max_hz,
                                    truncation=self.truncation, padding=self.padding)


def _split3(count: int) -> list[tuple[int, int]]:
    """``numpy.array_split(range(count), 3)`` as (first, size); empty parts → (0, 1)."""
    base, extra = divmod(count, 3)
    parts, first = [], 0
    for index in range(3):
        size = base + (1 if index < extra else 0)
        parts.append((first, size) if size > 0 else (0, 1))
        first += size
    return parts


class ClapFrontEnd(nn.Module):
    """Differentiable ``ClapFeatureExtractor``: ``[n, samples]`` at 48 kHz → features.

    :meth:`forward` returns ``(features [n, 4 or 1, chunk_frames, num_mels], is_longer
    [n, 1] bool)``: four channels in ``"fusion"`` mode, one in ``"rand_trunc"``. All inputs
    of one call have the same length, so they take the same path. See the module
    docstring for the steps and the sources.
    """

    def __init__(self, config: ClapFrontEndConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ClapFrontEndConfig()
        self.config.validate()
        c = self.config
        common = dict(num_frequency_bins=c.fft_samples // 2 + 1, num_mels=c.num_mels,
                      min_hz=c.min_hz, max_hz=c.max_hz, sample_rate_hz=c.sample_rate_hz)
        self.register_buffer("window", torch.hann_window(c.fft_samples, periodic=True,
                                                         dtype=torch.float64), persistent=False)
        self.register_buffer("filters_htk", mel_filterbank(**common, mel_scale="htk"),
                             persistent=False)
        self.register_buffer("filters_slaney", mel_filterbank(**common, mel_scale="slaney",
                                                              norm="slaney"), persistent=False)

    def log_mel(self, x: Tensor, *, htk: bool) -> Tensor:
        """Log-mel dB ``[n, frames, mels]`` of ``x [n, samples]`` (the extractor's
        ``_np_extract_fbank_features``), in ``x``'s dtype."""
        c = self.config
        power = power_spectrogram(x, fft_samples=c.fft_samples, hop_samples=c.hop_samples,
                                  window=self.window)
        filters = (self.filters_htk if htk else self.filters_slaney).to(power.dtype)
        mel = torch.einsum("nbt,bm->ntm", power, filters)
        return 10.0 * torch.log10(mel.clamp_min(_MEL_FLOOR))

    def pad(self, x: Tensor) -> Tensor:
        """Pad ``x [n, samples]`` (no longer than ``max_samples``) the configured way."""
        target, length = self.config.max_samples, x.shape[-1]
        if length < target:
            if self.config.padding == "repeat":
                x = x.repeat(1, target // length + 1)[:, :target]
            elif self.config.padding == "repeatpad":
                x = x.repeat(1, target // length)
            x = F.pad(x, (0, target - x.shape[-1]))
        return x

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None,
                crop_starts: list[int] | None = None,
                chunk_starts: list[tuple[int, int, int]] | None = None) -> tuple[Tensor, Tensor]:
        """Features and ``is_longer`` of ``x [n, samples]`` (48 kHz mono).

        Random choices for inputs longer than ``max_samples`` come from ``generator`` (a
        CPU ``torch.Generator``; None means a fresh one seeded 0) unless given: one
        waveform crop start per example (``crop_starts``, "rand_trunc") or three frame
        starts per example (``chunk_starts``, "fusion").
        """
        c = self.config
        if x.dim() != 2 or x.shape[-1] < 2:
            raise InputError(f"CLAP front end: input {tuple(x.shape)}; give mono [n, samples] "
                             f"at {c.sample_rate_hz} Hz")
        n, length = x.shape
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        longer = torch.full((n, 1), length > c.max_samples, dtype=torch.bool, device=x.device)
        if length <= c.max_samples:
            mel = self.log_mel(self.pad(x), htk=c.truncation == "fusion")
            if c.truncation == "fusion":
                return mel.unsqueeze(1).expand(n, 4, *mel.shape[1:]), longer
            return mel.unsqueeze(1), longer
        if c.truncation == "rand_trunc":
            if crop_starts is None:
                crop_starts = torch.randint(length - c.max_samples + 1, (n,),
                                            generator=gen).tolist()
            crops = torch.stack([x[i, s:s + c.max_samples] for i, s in enumerate(crop_starts)])
            return self.log_mel(crops, htk=False).unsqueeze(1), longer
        mel = self.log_mel(x, htk=True)                                # [n, total, mels]
        total, chunk = mel.shape[1], c.chunk_frames
        if total == chunk:
            # At most one hop longer than max_samples: the whole input, as the extractor does.
            return mel.unsqueeze(1).expand(n, 4, *mel.shape[1:]), torch.zeros_like(longer)
        if chunk_starts is None:
            parts = _split3(total - chunk + 1)
            chunk_starts = [tuple(first + int(torch.randint(size, (1,), generator=gen))
                                  for first, size in parts) for _ in range(n)]  # type: ignore[misc]
        # float32 as in the extractor: its sampling positions are rounded in float32.
        shrunk = F.interpolate(mel.float().unsqueeze(1), size=[chunk, c.num_mels],
                               mode="bilinear", align_corners=False).to(mel.dtype)
        crops = torch.stack([torch.stack([mel[i, s:s + chunk] for s in starts])
                             for i, starts in enumerate(chunk_starts)])  # [n, 3, chunk, mels]
        return torch.cat([shrunk, crops], dim=1), longer


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars for the duration."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class ClapEncoder(nn.Module):
    """CLAP's audio embedding as an :class:`~harmonycloak.targets.embedding.AudioEncoder`.

    ``model`` is a ``transformers.ClapAudioModelWithProjection``; ``front_end`` the
    extractor's settings (:class:`ClapFrontEndConfig`), which must fit the model: as many
    mel bands as ``num_mel_bins`` and no more frames than its spectrogram "image" holds.
    ``embed(x [n, samples]) → [n, projection_dim]``: 48 kHz mono in, L2-normalized audio
    embeddings out (``ClapModel.get_audio_features``: what MusicLDM conditions on),
    differentiable in ``x`` through :class:`ClapFrontEnd`. The model always runs in eval
    mode (batch norm on running statistics, no dropout); ``train()`` cannot change that.
    ``window_samples`` is the extractor's input length (10 s at 48 kHz).
    """

    kind = "clap"

    def __init__(self, model: nn.Module, front_end: ClapFrontEndConfig | None = None) -> None:
        super().__init__()
        config = front_end if front_end is not None else ClapFrontEndConfig()
        audio = getattr(model, "config", None)
        if not hasattr(audio, "spec_size") or not hasattr(model, "audio_projection"):
            raise InputError(f"ClapEncoder: {type(model).__name__} is not a CLAP audio model; "
                             "give a transformers ClapAudioModelWithProjection (ClapEncoder.load "
                             "reads one from a ClapModel checkpoint)")
        freq_ratio = audio.spec_size // audio.num_mel_bins
        if config.num_mels != audio.num_mel_bins:
            raise InputError(f"CLAP front end has {config.num_mels} mel bands but the model "
                             f"expects num_mel_bins={audio.num_mel_bins}; use a "
                             "preprocessor_config.json whose feature_size matches the model")
        if freq_ratio < 1 or config.chunk_frames > audio.spec_size * freq_ratio:
            raise InputError(f"CLAP front end gives {config.chunk_frames} frames but the model "
                             f"(spec_size {audio.spec_size}, {audio.num_mel_bins} mels) takes at "
                             f"most {audio.spec_size * max(freq_ratio, 0)}; use a shorter "
                             "max_length_s or the model's own preprocessor_config.json")
        self.model = model
        self.front_end = ClapFrontEnd(config)
        self.sample_rate_hz = config.sample_rate_hz
        self.window_samples = config.max_samples
        self.embedding_dim = int(audio.projection_dim)
        super().train(False)

    def train(self, mode: bool = True) -> ClapEncoder:
        """Always eval mode: the encoder is fixed (see the class docstring)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def num_parameters(self) -> int:
        """Parameters of the audio tower and its projection."""
        return sum(p.numel() for p in self.model.parameters())

    def features(self, x: Tensor, *,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``ClapFeatureExtractor`` output of ``x [n, samples]`` in torch (see ClapFrontEnd)."""
        return self.front_end(x, generator=generator)

    def embed_features(self, features: Tensor, is_longer: Tensor) -> Tensor:
        """Unit audio embeddings ``[n, dim]`` of extractor features ``[n, c, frames, mels]``."""
        out = self.model(input_features=features, is_longer=is_longer)
        return F.normalize(out.audio_embeds, dim=-1)

    def embed(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Unit CLAP audio embeddings ``[n, dim]`` of 48 kHz mono ``x [n, samples]``."""
        features, is_longer = self.features(x.to(self.device, torch.float32), generator=generator)
        return self.embed_features(features, is_longer)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model (``config.json``, ``model.safetensors``) and the extractor's
        ``preprocessor_config.json``; :meth:`load` reads them back."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(out)
            self.front_end.config.to_feature_extractor().save_pretrained(out)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "cpu") -> ClapEncoder:
        """The audio tower of a local CLAP checkpoint (``local_files_only``, safetensors).

        ``directory`` holds ``config.json`` (model_type ``clap`` or ``clap_audio_model``),
        ``model.safetensors`` (or a sharded index) and ``preprocessor_config.json``.
        Raises ModelLoadError naming the directory and the expected files when one is
        missing, unreadable, of another model, or when the weights do not cover the audio
        tower; also when ``transformers`` is not installed.
        """
        try:
            from transformers import ClapAudioModelWithProjection, ClapFeatureExtractor
        except ImportError as exc:
            raise ModelLoadError(f"{directory}: loading a CLAP model needs the transformers "
                                 f"package; {_INSTALL}") from exc
        where = Path(directory)
        if not where.is_dir():
            raise ModelLoadError(f"{where}: no such CLAP model directory; it must hold "
                                 f"{_EXPECTED}; {_FIX}")
        missing = [name for name in (_MODEL_CONFIG, _PREPROCESSOR_CONFIG)
                   if not (where / name).is_file()]
        if not ((where / _WEIGHTS).is_file() or (where / _WEIGHTS_INDEX).is_file()):
            missing.append(_WEIGHTS)
        if missing:
            raise ModelLoadError(f"{where}: {', '.join(missing)} missing; a CLAP model directory "
                                 f"holds {_EXPECTED}; {_FIX}")
        config_path = where / _MODEL_CONFIG
        try:
            model_type = json.loads(config_path.read_text()).get("model_type")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise ModelLoadError(f"{config_path}: unreadable ({exc}); {_FIX}") from exc
        if model_type not in ("clap", "clap_audio_model"):
            raise ModelLoadError(f"{config_path}: model_type {model_type!r} is not a CLAP model "
                                 f"('clap' or 'clap_audio_model'); {_FIX}")
        try:
            with _quiet_transformers():
                extractor = ClapFeatureExtractor.from_pretrained(where, local_files_only=True)
                model, info = ClapAudioModelWithProjection.from_pretrained(
                    where, local_files_only=True, use_safetensors=True, output_loading_info=True)
        except Exception as exc:  # corrupt JSON or weights, wrong shapes
            raise ModelLoadError(f"{where}: cannot load the CLAP audio model "
                                 f"({type(exc).__name__}: {exc}); it must hold {_EXPECTED}; "
                                 f"{_FIX}") from exc
        bad = sorted(info.get("missing_keys", [])) + sorted(
            str(k) for k in info.get("mismatched_keys", []))
        if bad:
            raise ModelLoadError(f"{where / _WEIGHTS}: the weights do not cover the CLAP audio "
                                 f"tower ({len(bad)} missing or mis-shaped, e.g. {bad[0]}); "
                                 f"{_FIX}")
        try:
            encoder = cls(model, ClapFrontEndConfig.from_feature_extractor(extractor))
        except InputError as exc:
            raise ModelLoadError(f"{where}: {_PREPROCESSOR_CONFIG} does not fit {_MODEL_CONFIG} "
                                 f"({exc})") from exc
        return encoder.to(resolve_device(device))

    def extra_repr(self) -> str:
        return json.dumps(asdict(self.front_end.config))
