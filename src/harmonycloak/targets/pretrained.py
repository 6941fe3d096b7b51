"""Real pretrained checkpoints from a local directory: EnCodec and MusicGen as targets.

Users point ``--model DIR`` at a Hugging Face checkpoint folder (what ``save_pretrained``
writes, e.g. a local copy of ``facebook/musicgen-small`` or ``facebook/encodec_24khz``):
``config.json`` plus ``model.safetensors`` (or a sharded index, or ``pytorch_model.bin``).
Nothing is downloaded: ``from_pretrained(..., local_files_only=True)``. The classes are
transformers' own (``EncodecModel``, ``MusicgenForConditionalGeneration``); this module
only adds the losses, the training step and the differentiable path from the waveform.

:class:`MusicgenTarget` (white-box MusicGen)
---------------------------------------------
L_gen = the decoder's next-token NLL (nats per codebook token) on the EnCodec codes of the
input, unconditional: the text condition is MusicGen's null condition (zero encoder
states, attention mask 0: what ``get_unconditional_inputs`` builds and what MusicGen's
classifier-free dropout trains on). Reused from transformers: the model classes, the
EnCodec encoder and its RVQ codebooks (``quantizer.layers[k].codebook.embed``), the
decoder's embeddings, blocks and heads, and the token layout of
``MusicgenForCausalLM.build_delay_pattern_mask`` + ``shift_tokens_right`` (re-derived in
:func:`harmonycloak.targets.codec_lm.delay_pattern`: codebook k delayed by k steps — by
k // 2 for stereo checkpoints, whose codebooks interleave left and right — the special
token ``pad_token_id`` where the pattern is empty, ``decoder_start_token_id`` as BOS) and
its loss (cross-entropy per codebook, pad labels ignored; we average over all predicted
tokens, which is the same with equal counts per codebook).

Differentiable in the waveform exactly as :mod:`harmonycloak.targets.codec_lm`: the
EnCodec encoder is differentiable up to quantization; soft assignments ``softmax(−d² /
(τ · d²_min))`` against each RVQ codebook (:func:`~harmonycloak.targets.codec_lm.soft_rvq`)
give straight-through soft targets (the value is the hard-code NLL) and straight-through
input embeddings. The decoder is fed
``inputs_embeds``; transformers 5.23's ``MusicgenDecoder`` then adds the position-0
embedding to every step (it reads the sequence length off the wrong axis), so a forward
hook on ``embed_positions`` supplies the positions of the whole sequence during our calls
(tested: equal logits to the ``input_ids`` path). ``train_step`` trains the decoder only
(EnCodec and T5 frozen, as MusicGen is trained). Long inputs are cut into windows of
``max_frames`` frames (default: 30 s, MusicGen's training length, within the position
table), each starting from BOS.

Cost: at musicgen-small's sizes (the 32 kHz EnCodec's 57 M parameters; the decoder's
24 × 1024 layers, 420 M with cross-attention) one 10 s clip's loss + backward takes
roughly 10 s of one CPU thread, about 6–7 s of it in the EnCodec encoder (measured with
random weights of those shapes, the decoder at 2 of its 24 layers): use ``device="cuda"``.

:class:`EncodecTarget` (the bare codec)
---------------------------------------
EnCodec is not a generative model; its "L_gen" is its own training loss, ``objective``:

* ``"reconstruction"`` (default): the reconstruction and commitment terms of EnCodec's
  generator loss L_G, ``0.1·ℓ_t + ℓ_f + ℓ_w`` with the paper's weights λ_t, λ_f, λ_w
  (Défossez et al. 2022, "High fidelity neural audio compression"): ℓ_t the time-domain
  L1, ℓ_f a multi-scale spectral loss at windows 2^5..2^11 (linear-frequency STFT
  magnitudes, spectral convergence + log-magnitude L1, where EnCodec uses 64-bin mels with
  L1 + L2), ℓ_w the RVQ commitment loss; the quantizer is crossed by the straight-through
  estimator, as EnCodec trains. The adversarial and feature-matching terms need
  discriminators that checkpoints do not ship, so they are left out. This is the min-min
  reading of the paper (noise that makes the model's own training loss vanish), and it
  exercises the decoder too.
* ``"commitment"``: only the RVQ quantization error ``Σ_k ‖r_k − q_k‖²`` (per frame and
  dimension): encoder only, about half the cost; it drives the latents onto codewords, so
  the tokens an LM downstream trains on are the most "certain" ones.

``train_step`` is one step on the encoder and decoder with that objective plus an EMA
update of the codebooks (decay 0.99, EnCodec's). Chunked checkpoints (the 48 kHz model:
1 s chunks, 1 % overlap, RMS normalization) are handled chunk by chunk like
``EncodecModel.encode``; the loss is the length-weighted mean over chunks.

Stereo: a mono checkpoint sees the mid channel (``stereo="mid"``) or each channel as its
own example (``"channels"``); a stereo EnCodec (48 kHz) or stereo MusicGen gets left and
right (a mono input is duplicated). Input rate: resampled in the graph with
:func:`harmonycloak.perturb.dsp.resample` to the checkpoint's ``sampling_rate``.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harmonycloak.errors import InputError, ModelLoadError
from harmonycloak.perturb.dsp import resample
from harmonycloak.targets.codec_lm import (
    SoftTargets,
    StereoMode,
    check_audio,
    code_nll,
    delay_pattern,
    delay_soft,
    ema_codebook_update,
    fold_channels,
    frozen,
    multi_resolution_stft_loss,
    seeded_rng,
    shift_right,
    soft_rvq,
    window_frames,
)

__all__ = ["EncodecTarget", "MusicgenTarget", "EncodecObjective", "load_pretrained",
           "WEIGHT_FILES"]

EncodecObjective = Literal["reconstruction", "commitment"]
OptimizerName = Literal["sgd", "adam", "adamw"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
"""Any one of these next to ``config.json`` makes a loadable checkpoint folder."""

OPTIONS_FILE = "harmonycloak.json"
FORMAT_NAME = "harmonycloak.pretrained"
FORMAT_VERSION = 1
_ENCODEC_WINDOWS = tuple(2 ** i for i in range(5, 12))   # EnCodec's ℓ_f scales
_MUSICGEN_SEGMENT_S = 30.0                               # MusicGen's training segments


# ------------------------------------------------------------------------ loading


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ModelLoadError("pretrained models need the transformers package; "
                             "pip install 'transformers>=5' (or harmonycloak[models])") from err
    return transformers


def _check_dir(directory: str | os.PathLike[str], model_types: tuple[str, ...],
               what: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder and its ``config.json``; ModelLoadError naming what is wrong."""
    path = Path(directory)
    expected = (f"expected a Hugging Face {what} checkpoint folder (save_pretrained output) "
                f"holding config.json and one of {', '.join(WEIGHT_FILES)}")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such model directory; {expected}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{path}: config.json is missing; {expected}")
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"{config_path}: unreadable config ({err}); {expected}") from err
    model_type = config.get("model_type")
    if model_type not in model_types:
        raise ModelLoadError(f"{path}: config.json has model_type {model_type!r}, not "
                             f"{' or '.join(map(repr, model_types))}; {expected}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelLoadError(f"{path}: no weights file; {expected}")
    return path, config


def _from_pretrained(cls: Any, path: Path, what: str) -> Any:
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
    except Exception as err:  # corrupt weights, mismatched shapes, unsupported variants
        raise ModelLoadError(f"{path}: transformers could not load this {what} checkpoint "
                             f"({type(err).__name__}: {err}); re-export it with "
                             "save_pretrained() or check that it is complete") from err
    return model.eval()


def _save_pretrained(target: Any, directory: str | os.PathLike[str]) -> Path:
    """``target.model.save_pretrained`` into ``directory`` plus ``target.options()``."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    target.model.save_pretrained(str(path))
    _write_options(path, target.name, target.options())
    return path


def _read_options(path: Path, target: str) -> dict[str, Any]:
    """Options a previous :meth:`save` wrote beside the checkpoint (empty when none)."""
    file = path / OPTIONS_FILE
    if not file.is_file():
        return {}
    try:
        meta = json.loads(file.read_text())
        if meta.get("format") != FORMAT_NAME or meta.get("target") != target:
            raise ValueError(f"format {meta.get('format')!r} / target {meta.get('target')!r} "
                             f"is not {FORMAT_NAME!r} / {target!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {meta.get('format_version')!r} is not "
                             f"{FORMAT_VERSION}")
        return dict(meta["options"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelLoadError(f"{file}: not a harmonycloak options file ({err}); delete it to "
                             "load the checkpoint with default options") from err


def _write_options(path: Path, target: str, options: dict[str, Any]) -> None:
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "target": target,
            "options": options}
    tmp = path / f".{OPTIONS_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path / OPTIONS_FILE)


def load_pretrained(directory: str | os.PathLike[str], **kwargs: Any) -> Any:
    """:class:`MusicgenTarget` or :class:`EncodecTarget`, by the folder's ``model_type``."""
    path, config = _check_dir(directory, ("musicgen", "encodec"), "MusicGen or EnCodec")
    cls = MusicgenTarget if config["model_type"] == "musicgen" else EncodecTarget
    return cls.load(path, **kwargs)


# ----------------------------------------------------------------- shared helpers


def _check_common(sample_rate_hz: Any, stereo: Any, optimizer: Any, lr: Any,
                  default_lr: float, name: str) -> float:
    if not isinstance(sample_rate_hz, int) or not 8000 <= sample_rate_hz <= 192000:
        raise InputError(f"{name}: sample_rate_hz={sample_rate_hz!r}; give the file's rate "
                         "as an integer between 8000 and 192000 Hz")
    if stereo not in ("mid", "channels"):
        raise InputError(f"{name}: stereo={stereo!r}; use 'mid' or 'channels'")
    if optimizer not in ("sgd", "adam", "adamw"):
        raise InputError(f"{name}: optimizer={optimizer!r}; use 'sgd', 'adam' or 'adamw'")
    lr = (0.025 if optimizer == "sgd" else default_lr) if lr is None else lr
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"{name}: lr={lr!r}; must be a positive finite number")
    return float(lr)


def _optimizer(params: Any, name: str, lr: float, momentum: float,
               weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _device(device: str) -> torch.device:
    from harmonycloak.config import resolve_device

    return torch.device(resolve_device(device))


def _as_audio(x: Any, device: torch.device, sample_rate_hz: int) -> Tensor:
    """``x`` checked by :func:`~harmonycloak.targets.codec_lm.check_audio`, as float32 on
    ``device``."""
    check_audio(x, sample_rate_hz=sample_rate_hz)
    return x.to(device, torch.float32)


def _codebooks(encodec: nn.Module, count: int) -> Tensor:
    """The first ``count`` RVQ codebooks of an ``EncodecModel``, ``[count, V, D]``."""
    return torch.stack([layer.codebook.embed for layer in encodec.quantizer.layers[:count]])


def _rms_scale(wave: Tensor) -> Tensor:
    """EnCodec's normalization scale per row: RMS of the channel mean + 1e-8, ``[rows, 1, 1]``."""
    mono = wave.mean(dim=1, keepdim=True)
    return mono.pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-8


class _Front:
    """File audio → rows at an EnCodec's rate and channel count, differentiably."""

    def __init__(self, *, sample_rate_hz: int, model_rate_hz: int, model_channels: int,
                 stereo: StereoMode) -> None:
        self.sample_rate_hz, self.model_rate_hz = sample_rate_hz, model_rate_hz
        self.model_channels, self.stereo = model_channels, stereo

    def rows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[batch, channels, samples]`` → ``([rows, model_channels, samples'], owner [rows])``.

        Two model channels: left and right (a mono input duplicated), one row per example;
        one: :func:`~harmonycloak.targets.codec_lm.fold_channels` with ``stereo``.
        """
        check_audio(x, sample_rate_hz=self.sample_rate_hz)
        if self.model_channels == 2:
            wave = x if x.shape[1] == 2 else x.expand(-1, 2, -1)
            owner = torch.arange(x.shape[0], device=x.device)
        else:
            mono, owner = fold_channels(x, stereo=self.stereo, sample_rate_hz=self.sample_rate_hz)
            wave = mono.unsqueeze(1)
        return resample(wave, self.sample_rate_hz, self.model_rate_hz), owner


# ------------------------------------------------------------------------- EnCodec


class EncodecTarget:
    """A transformers ``EncodecModel`` with its own training loss as L_gen (module doc).

    ``bandwidth_kbps`` picks the number of codebooks like ``EncodecModel.encode`` (None:
    the checkpoint's smallest target bandwidth, ``encode``'s default). Optimizers as
    :class:`~harmonycloak.targets.codec_lm.CodecLMTarget` (SGD momentum 0.9 lr 0.025 by
    default; ``"adam"``/``"adamw"`` default lr 3e-4, EnCodec's). No randomness anywhere.
    """

    name = "encodec"

    def __init__(self, model: nn.Module, *, sample_rate_hz: int = 44100,
                 objective: EncodecObjective = "reconstruction",
                 bandwidth_kbps: float | None = None, stereo: StereoMode = "mid",
                 optimizer: OptimizerName = "sgd", lr: float | None = None,
                 momentum: float = 0.9, weight_decay: float = 0.01, grad_clip: float = 1.0,
                 ema_decay: float = 0.99, seed: int = 0, device: str = "cpu") -> None:
        self.lr = _check_common(sample_rate_hz, stereo, optimizer, lr, 3e-4, "encodec")
        if objective not in ("reconstruction", "commitment"):
            raise InputError(f"encodec: objective={objective!r}; use 'reconstruction' or "
                             "'commitment'")
        self.config = model.config
        if bandwidth_kbps is None:
            bandwidth_kbps = float(self.config.target_bandwidths[0])
        if float(bandwidth_kbps) not in [float(b) for b in self.config.target_bandwidths]:
            raise InputError(f"encodec: bandwidth_kbps={bandwidth_kbps}; this checkpoint "
                             f"supports {list(self.config.target_bandwidths)}")
        self.num_quantizers = model.quantizer.get_num_quantizers_for_bandwidth(bandwidth_kbps)
        if self.num_quantizers < 1:
            raise InputError(f"encodec: bandwidth {bandwidth_kbps} kbps gives no codebook "
                             "for this checkpoint; choose a larger bandwidth")
        self.model = model
        self.device = _device(device)
        self.model.to(self.device).eval()
        self.sample_rate_hz = sample_rate_hz
        self.objective: EncodecObjective = objective
        self.bandwidth_kbps = float(bandwidth_kbps)
        self.stereo: StereoMode = stereo
        self.optimizer_name: OptimizerName = optimizer
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.grad_clip, self.ema_decay, self.seed = float(grad_clip), float(ema_decay), int(seed)
        self.steps = 0
        self.front = _Front(sample_rate_hz=sample_rate_hz,
                            model_rate_hz=int(self.config.sampling_rate),
                            model_channels=int(self.config.audio_channels), stereo=stereo)
        self.optimizer = _optimizer(self.model.parameters(), optimizer, self.lr,
                                    self.momentum, self.weight_decay)

    # ------------------------------------------------------------------- files

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **kwargs: Any) -> EncodecTarget:
        """An ``EncodecModel`` checkpoint folder (local files only); ``kwargs`` override
        the options a previous :meth:`save` stored. ModelLoadError when it is missing,
        incomplete or not EnCodec."""
        transformers = _transformers()
        path, _ = _check_dir(directory, ("encodec",), "EnCodec (EncodecModel)")
        model = _from_pretrained(transformers.EncodecModel, path, "EnCodec")
        return cls(model, **{**_read_options(path, cls.name), **kwargs})

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """``save_pretrained`` into ``directory`` plus our options in ``harmonycloak.json``."""
        return _save_pretrained(self, directory)

    def options(self) -> dict[str, Any]:
        return {"sample_rate_hz": self.sample_rate_hz, "objective": self.objective,
                "bandwidth_kbps": self.bandwidth_kbps, "stereo": self.stereo,
                "optimizer": self.optimizer_name, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "grad_clip": self.grad_clip,
                "ema_decay": self.ema_decay, "seed": self.seed}

    def num_parameters(self) -> dict[str, int]:
        return {"encoder": sum(p.numel() for p in self.model.encoder.parameters()),
                "decoder": sum(p.numel() for p in self.model.decoder.parameters())}

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        return self.model.load_state_dict(state)

    # -------------------------------------------------------------------- loss

    def _chunks(self, length: int) -> list[tuple[int, int]]:
        chunk, stride = self.config.chunk_length, self.config.chunk_stride
        if chunk is None:
            return [(0, length)]
        return [(start, min(chunk, length - start)) for start in range(0, length, stride)]

    def _chunk_losses(self, frame: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """Per-row objective ``[rows]`` of one chunk, its RVQ residuals and codes."""
        scale = _rms_scale(frame) if self.config.normalize else None
        latent = self.model.encoder(frame if scale is None else frame / scale)
        books = _codebooks(self.model, self.num_quantizers)
        assignment = soft_rvq(latent.transpose(1, 2), books, temperature=1.0, soft=False)
        chosen = torch.stack([F.embedding(assignment.codes[:, k], books[k])
                              for k in range(self.num_quantizers)]).detach()
        commitment = (assignment.residuals - chosen).pow(2).mean(dim=(2, 3)).sum(0)
        if self.objective == "commitment":
            return commitment, list(assignment.residuals), assignment.codes
        quantized = assignment.quantized.transpose(1, 2)
        straight = latent + (quantized - latent).detach()
        recon = self.model.decoder(straight)[..., :frame.shape[-1]]
        if scale is not None:
            recon = recon * scale
        l_time = (recon - frame).abs().mean(dim=(1, 2))
        l_freq = multi_resolution_stft_loss(recon, frame, n_ffts=_ENCODEC_WINDOWS).mean(1)
        return 0.1 * l_time + l_freq + commitment, list(assignment.residuals), assignment.codes

    def _example_objective(self, x: Tensor) -> tuple[Tensor, list[tuple[list[Tensor], Tensor]]]:
        """Objective per example ``[batch]`` and every chunk's (residuals, codes)."""
        wave, owner = self.front.rows(_as_audio(x, self.device, self.sample_rate_hz))
        total = wave.new_zeros(wave.shape[0])
        stats = []
        chunks = self._chunks(wave.shape[-1])
        covered = sum(length for _, length in chunks)      # overlapping chunks count twice
        for start, length in chunks:
            losses, residuals, codes = self._chunk_losses(wave[..., start:start + length])
            total = total + losses * (length / covered)
            stats.append((residuals, codes))
        out = total.new_zeros(x.shape[0]).index_add(0, owner, total)
        return out / torch.bincount(owner, minlength=x.shape[0]).clamp_min(1).to(out.dtype), stats

    def loss(self, x: Tensor) -> Tensor:
        """Mean objective over the batch ``x [batch, channels, samples]``; differentiable in
        ``x`` (straight-through quantizer), never in the weights."""
        with frozen(self.model):
            return self._example_objective(x)[0].mean()

    @torch.no_grad()
    def example_losses(self, x: Tensor) -> Tensor:
        """The objective per example, ``[batch]``."""
        return self._example_objective(x)[0]

    @torch.no_grad()
    def _ema(self, residuals: list[Tensor], codes: Tensor) -> None:
        for k, layer in enumerate(self.model.quantizer.layers[:self.num_quantizers]):
            book = layer.codebook
            if float(book.cluster_size.sum()) <= 0:    # no EMA statistics in the checkpoint
                book.embed_avg.copy_(book.embed)
                book.cluster_size.fill_(1.0)
            ema_codebook_update(book.embed, book.embed_avg, book.cluster_size,
                                residuals[k].reshape(-1, residuals[k].shape[-1]),
                                codes[:, k].reshape(-1), decay=self.ema_decay)

    def train_step(self, x: Tensor) -> float:
        """One step on encoder + decoder with the objective, then the codebooks' EMA update;
        returns the loss before the step."""
        self.optimizer.zero_grad(set_to_none=True)
        per_example, stats = self._example_objective(x.detach())
        loss = per_example.mean()
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for residuals, codes in stats:
            self._ema(residuals, codes)
        self.steps += 1
        return float(loss.detach())

    @torch.no_grad()
    def tokenize(self, x: Tensor) -> Tensor:
        """Codes ``[rows, K, frames]`` of the first chunk, equal to ``EncodecModel.encode``'s."""
        wave, _ = self.front.rows(_as_audio(x, self.device, self.sample_rate_hz))
        start, length = self._chunks(wave.shape[-1])[0]
        frame = wave[..., start:start + length]
        if self.config.normalize:
            frame = frame / _rms_scale(frame)
        latent = self.model.encoder(frame).transpose(1, 2)
        return soft_rvq(latent, _codebooks(self.model, self.num_quantizers), temperature=1.0,
                        soft=False).codes


# ------------------------------------------------------------------------- MusicGen


class MusicgenTarget:
    """A transformers ``MusicgenForConditionalGeneration`` as a white-box target (module doc).

    ``soft_temperature`` τ and ``soft_targets`` as in
    :class:`~harmonycloak.targets.codec_lm.CodecLMConfig`. ``max_frames``: window length
    in frames (None: 30 s, capped by the position table). Optimizers: ``"sgd"`` (momentum
    0.9, lr 0.025) or ``"adam"``/``"adamw"`` (lr 1e-4; MusicGen trains with AdamW).
    ``seed`` drives the dropout of ``train_step`` (and nothing else: ``loss`` runs in
    eval mode); the global RNGs are left as they were.
    """

    name = "musicgen"

    def __init__(self, model: nn.Module, *, sample_rate_hz: int = 44100,
                 stereo: StereoMode = "mid", soft_temperature: float = 0.1,
                 soft_targets: SoftTargets = "straight-through", max_frames: int | None = None,
                 optimizer: OptimizerName = "sgd", lr: float | None = None,
                 momentum: float = 0.9, weight_decay: float = 0.01, grad_clip: float = 1.0,
                 seed: int = 0, device: str = "cpu") -> None:
        self.lr = _check_common(sample_rate_hz, stereo, optimizer, lr, 1e-4, "musicgen")
        if not (math.isfinite(soft_temperature) and soft_temperature > 0):
            raise InputError(f"musicgen: soft_temperature={soft_temperature!r}; must be a "
                             "positive finite number")
        if soft_targets not in ("straight-through", "soft"):
            raise InputError(f"musicgen: soft_targets={soft_targets!r}; use "
                             "'straight-through' or 'soft'")
        self.model = model
        dec, enc = model.config.decoder, model.config.audio_encoder
        if enc.chunk_length_s is not None:
            raise ModelLoadError(f"musicgen: its EnCodec is chunked (chunk_length_s="
                                 f"{enc.chunk_length_s}); MusicGen checkpoints use an unchunked "
                                 "EnCodec: re-export the model with chunk_length_s=None")
        self.audio_channels = int(dec.audio_channels)
        self.num_codebooks = int(dec.num_codebooks)
        self.codebooks_per_channel = self.num_codebooks // self.audio_channels
        if self.codebooks_per_channel > model.audio_encoder.quantizer.num_quantizers:
            raise ModelLoadError(f"musicgen: the decoder predicts {self.num_codebooks} "
                                 f"codebooks but its EnCodec has only "
                                 f"{model.audio_encoder.quantizer.num_quantizers}")
        self.vocab_size = int(dec.vocab_size)
        self.pad_id = int(dec.pad_token_id if dec.pad_token_id is not None else dec.vocab_size)
        self.bos_id = _decoder_start_token(model)
        self.delays = [k // self.audio_channels for k in range(self.num_codebooks)]
        limit = int(dec.max_position_embeddings) - max(self.delays) - 1
        default = math.ceil(_MUSICGEN_SEGMENT_S * float(enc.frame_rate))
        self.max_frames = min(limit, default) if max_frames is None else int(max_frames)
        if not 1 <= self.max_frames <= limit:
            raise InputError(f"musicgen: max_frames={max_frames}; use 1..{limit} (the "
                             "decoder's position table)")
        self.sample_rate_hz = sample_rate_hz
        self.stereo: StereoMode = stereo
        self.soft_temperature, self.soft_targets = float(soft_temperature), soft_targets
        self.optimizer_name: OptimizerName = optimizer
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.grad_clip, self.seed = float(grad_clip), int(seed)
        self.device = _device(device)
        self.model.to(self.device).eval()
        self.front = _Front(sample_rate_hz=sample_rate_hz, model_rate_hz=int(enc.sampling_rate),
                            model_channels=self.audio_channels, stereo=stereo)
        self.optimizer = _optimizer(self.model.decoder.parameters(), optimizer, self.lr,
                                    self.momentum, self.weight_decay)
        self._rng = torch.Generator().manual_seed(self.seed)
        self.steps = 0

    # ------------------------------------------------------------------- files

    @classmethod
    def load(cls, directory: str | os.PathLike[str], **kwargs: Any) -> MusicgenTarget:
        """A ``MusicgenForConditionalGeneration`` checkpoint folder (local files only);
        ``kwargs`` override the options a previous :meth:`save` stored."""
        transformers = _transformers()
        path, _ = _check_dir(directory, ("musicgen",),
                             "MusicGen (MusicgenForConditionalGeneration)")
        model = _from_pretrained(transformers.MusicgenForConditionalGeneration, path, "MusicGen")
        return cls(model, **{**_read_options(path, cls.name), **kwargs})

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """``save_pretrained`` into ``directory`` plus our options in ``harmonycloak.json``."""
        return _save_pretrained(self, directory)

    def options(self) -> dict[str, Any]:
        return {"sample_rate_hz": self.sample_rate_hz, "stereo": self.stereo,
                "soft_temperature": self.soft_temperature, "soft_targets": self.soft_targets,
                "max_frames": self.max_frames, "optimizer": self.optimizer_name, "lr": self.lr,
                "momentum": self.momentum, "weight_decay": self.weight_decay,
                "grad_clip": self.grad_clip, "seed": self.seed}

    def num_parameters(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"text_encoder": count(self.model.text_encoder),
                "audio_encoder": count(self.model.audio_encoder),
                "decoder": count(self.model.decoder)}

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> Any:
        return self.model.load_state_dict(state)

    # ------------------------------------------------------------------ tokens

    def _codes(self, x: Tensor, *, soft: bool) -> tuple[Tensor, Tensor | None, Tensor]:
        """Codes ``[rows, K, T]``, soft assignments ``[rows, K, T, V]`` and owners."""
        wave, owner = self.front.rows(_as_audio(x, self.device, self.sample_rate_hz))
        if self.audio_channels == 2:           # left and right each through the mono EnCodec
            wave = wave.reshape(-1, 1, wave.shape[-1])
        encodec = self.model.audio_encoder
        if encodec.config.normalize:
            wave = wave / _rms_scale(wave)
        latent = encodec.encoder(wave).transpose(1, 2)
        a = soft_rvq(latent, _codebooks(encodec, self.codebooks_per_channel),
                     temperature=self.soft_temperature, soft=soft)
        codes, probs = a.codes, a.soft
        if self.audio_channels == 2:          # [B·2, q, T] → [B, 2q, T] as L0 R0 L1 R1 ...
            def interleave(z: Tensor) -> Tensor:
                pairs = z.reshape(x.shape[0], 2, *z.shape[1:]).transpose(1, 2)
                return pairs.reshape(x.shape[0], self.num_codebooks, *z.shape[2:])

            codes = interleave(codes)
            probs = None if probs is None else interleave(probs)
        return codes, probs, owner

    @torch.no_grad()
    def tokenize(self, x: Tensor) -> Tensor:
        """The decoder's codes ``[rows, num_codebooks, frames]`` of ``x``."""
        return self._codes(x, soft=False)[0]

    @torch.no_grad()
    def _null_condition(self, batch: int) -> tuple[Tensor, Tensor]:
        """MusicGen's unconditional text states and mask (``get_unconditional_inputs``),
        through the model's projection and masking as its ``forward`` does (all zeros)."""
        cfg = self.model.config
        states = torch.zeros(batch, 1, cfg.text_encoder.hidden_size, device=self.device)
        mask = torch.zeros(batch, 1, dtype=torch.long, device=self.device)
        if hasattr(self.model, "enc_to_dec_proj"):
            states = self.model.enc_to_dec_proj(states)
        return states * mask[..., None], mask

    def _sequence_nll(self, codes: Tensor, soft: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-token NLL ``[W, K, S]``, validity and the row of every window."""
        codes, soft, frame_valid, row = window_frames(codes, soft, frames=self.max_frames)
        labels, valid = delay_pattern(codes, self.delays, pad_id=self.pad_id, valid=frame_valid)
        inputs = shift_right(labels, self.bos_id)
        soft_labels = None if soft is None else delay_soft(soft, self.delays) * valid.unsqueeze(-1)
        soft_inputs = None if soft_labels is None else shift_right(soft_labels, 0.0)
        tables = self.model.decoder.model.decoder.embed_tokens
        emb = sum(tables[k](inputs[:, k]) for k in range(self.num_codebooks))
        if soft_inputs is not None:
            weights = torch.stack([t.weight[:self.vocab_size] for t in tables])
            s = torch.einsum("bksv,kvd->bsd", soft_inputs.to(weights.dtype), weights)
            emb = emb + s - s.detach()
        states, mask = self._null_condition(emb.shape[0])
        with _positions(self.model.decoder.model.decoder.embed_positions, emb.shape[1]):
            logits = self.model.decoder(inputs_embeds=emb, encoder_hidden_states=states,
                                        encoder_attention_mask=mask, use_cache=False).logits
        logits = logits.reshape(emb.shape[0], self.num_codebooks, emb.shape[1], -1)
        nll = code_nll(logits, labels, valid, soft=soft_labels, mode=self.soft_targets)
        return nll, valid, row

    def _example_nll(self, x: Tensor, *, soft: bool) -> tuple[Tensor, Tensor]:
        codes, probs, owner = self._codes(x, soft=soft)
        nll, valid, row = self._sequence_nll(codes, probs)
        example = owner[row]
        per_row, count_row = nll.sum(dim=(1, 2)), valid.sum(dim=(1, 2)).to(nll.dtype)
        total = per_row.new_zeros(x.shape[0]).index_add(0, example, per_row)
        count = count_row.new_zeros(x.shape[0]).index_add(0, example, count_row)
        return total, count

    def loss(self, x: Tensor) -> Tensor:
        """Mean next-token NLL per predicted token of the batch (nats), unconditional;
        differentiable in ``x`` through the EnCodec encoder and soft assignments."""
        with frozen(self.model):
            total, count = self._example_nll(x, soft=True)
        return total.sum() / count.sum().clamp_min(1.0)

    @torch.no_grad()
    def example_losses(self, x: Tensor) -> Tensor:
        """Mean NLL per predicted token of each example, ``[batch]``."""
        total, count = self._example_nll(x, soft=False)
        return total / count.clamp_min(1.0)

    def train_step(self, x: Tensor) -> float:
        """One step on the decoder (EnCodec and text encoder frozen) with the hard codes of
        ``x``; returns the NLL per token before the step."""
        codes = self.tokenize(x.detach())
        seed = int(torch.randint(0, 2**62, (1,), generator=self._rng))
        decoder = self.model.decoder
        decoder.train()
        try:
            with seeded_rng(seed, self.device):
                self.optimizer.zero_grad(set_to_none=True)
                nll, valid, _ = self._sequence_nll(codes, None)
                loss = nll.sum() / valid.sum().clamp_min(1)
                loss.backward()
                if self.grad_clip > 0:
                    nn.utils.clip_grad_norm_(decoder.parameters(), self.grad_clip)
                self.optimizer.step()
        finally:
            decoder.eval()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        return float(loss.detach())

    @torch.no_grad()
    def generate(self, n: int, seconds: float, generator: torch.Generator | None = None) -> Tensor:
        """``n`` unconditional clips ``[n, channels, samples]`` at ``sample_rate_hz`` (CPU),
        sampled by transformers' ``generate`` (its defaults: sampling, top-k from the
        checkpoint's generation config); ``generator`` seeds it (None: seed 0)."""
        frames = math.ceil(seconds * float(self.model.config.audio_encoder.frame_rate))
        if n < 1 or frames < 1:
            raise InputError(f"musicgen generate: n={n}, seconds={seconds}; ask for at least "
                             "one clip of at least one frame")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        seed = int(torch.randint(0, 2**62, (1,), generator=gen))
        inputs = self.model.get_unconditional_inputs(num_samples=n)
        with seeded_rng(seed, self.device):
            audio = self.model.generate(**inputs, do_sample=True, max_new_tokens=frames)
        audio = resample(audio.float(), self.front.model_rate_hz, self.sample_rate_hz)
        samples = round(seconds * self.sample_rate_hz)
        audio = F.pad(audio, (0, max(0, samples - audio.shape[-1])))[..., :samples]
        return audio.clamp(-1.0, 1.0).cpu()


def _decoder_start_token(model: nn.Module) -> int:
    """BOS of the decoder, as transformers' ``_get_decoder_start_token_id`` finds it."""
    for value in (getattr(model.generation_config, "decoder_start_token_id", None),
                  getattr(model.config, "decoder_start_token_id", None),
                  model.config.decoder.bos_token_id, model.config.decoder.pad_token_id):
        if isinstance(value, int):
            return value
    return int(model.config.decoder.vocab_size)


@contextmanager
def _positions(module: nn.Module, length: int) -> Iterator[None]:
    """Make ``MusicgenSinusoidalPositionalEmbedding`` return the positions of a whole
    ``length``-step sequence while the block runs (see the module docstring)."""
    table = module.get_embedding(length, module.embedding_dim)

    def hook(_module: nn.Module, _args: Any, output: Tensor) -> Tensor:
        return table.to(device=output.device, dtype=output.dtype)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
