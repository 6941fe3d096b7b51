"""Load and save audio files: the one place where user audio files meet the code.

:func:`load_audio` reads WAV (integer and float, any channel count), FLAC, Ogg Vorbis,
Ogg Opus, MP3 and AAC/M4A into an :class:`~harmonycloak.clip.AudioClip` and validates it
once (rate, length, finite samples), so later code can trust its input.
:func:`save_audio` writes the format the suffix names, atomically (see
:mod:`harmonycloak.io.files`).

Decoders: libsndfile (through ``soundfile``) for everything it reads, which is the
fastest path (a 3-minute stereo MP3 decodes in ~0.2 s with its mpg123); PyAV (FFmpeg) for
MP4/M4A/ADTS AAC and as the fallback for files libsndfile cannot open.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from harmonycloak.clip import AudioClip
from harmonycloak.errors import CodecError, InputError
from harmonycloak.io import codecs
from harmonycloak.io.files import (
    MAX_SAMPLE_RATE_HZ,
    MIN_SAMPLE_RATE_HZ,
    atomic_write,
    check_input_file,
)

__all__ = [
    "MAX_SAMPLE_RATE_HZ",
    "MIN_SAMPLE_RATE_HZ",
    "SUPPORTED_AUDIO_SUFFIXES",
    "WRITABLE_AUDIO_SUFFIXES",
    "load_audio",
    "save_audio",
]

#: Suffixes :func:`load_audio` is meant for (it sniffs the content, so the suffix is a
#: hint only) — use these to find audio files in a folder.
SUPPORTED_AUDIO_SUFFIXES: tuple[str, ...] = (
    ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4",
)
#: Suffixes :func:`save_audio` can write.
WRITABLE_AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")

# MIN_SAMPLE_RATE_HZ / MAX_SAMPLE_RATE_HZ (8-192 kHz) are defined once, in io.files, and
# re-exported here.

# libsndfile cannot open these; go straight to FFmpeg.
_PYAV_SUFFIXES = (".m4a", ".aac", ".mp4", ".m4b")
_REEXPORT_HINT = "export it again as WAV, FLAC or MP3"
_NOT_RECOGNISED = "no decoder recognised its contents"
# Decoder reasons that only mean "not a format I know" (or, for libsndfile's MP3 reader,
# mislead: the file exists and is regular, checked before any decoder runs).
_UNINFORMATIVE_REASONS = (
    "format not recognised",
    "file does not exist or is not a regular file",
    "invalid data found when processing input",
    "end of file",
)
_SF_ERR_MALFORMED_FILE = 3  # libsndfile: "Supported file format but file is malformed"


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def load_audio(path: str | os.PathLike[str], *, mono: bool = False) -> AudioClip:
    """Read an audio file into float32 ``[channels, samples]`` (full scale 1.0).

    Formats are recognised by content: WAV (8/16/24/32-bit integer, 32/64-bit float, any
    channel count), FLAC, Ogg Vorbis, Ogg Opus (``.opus`` or ``.ogg``), MP3, AAC in MP4
    (``.m4a``, ``.mp4``) and raw ADTS (``.aac``). Integer PCM is scaled by ``2**-(bits-1)``.
    Encoder delay and padding are removed where the file states them (MP3 LAME/Xing tag,
    MP4 edit list, Opus pre-skip), so decoded lengths match the original; raw ADTS AAC
    states none and keeps its priming. ``mono=True`` averages the channels into one.
    Float files keep samples beyond +-1 as they are. A 1-sample file and silence are
    valid audio. ``clip.source`` is ``path`` as given.

    Truncated or damaged files: when the file states its length (FLAC STREAMINFO, an
    MP3 Xing/Info/VBRI header, the MP4 sample table) and the stream stops before it, or
    the decoder fails part-way (FLAC "lost sync", corrupt AAC/Opus packets), this raises
    :class:`InputError` ("is truncated or damaged") instead of returning part of the
    song: protecting a fragment without a word would hand the musician a shorter file.
    Files that state no total length up front (a WAV cut inside its data, an MP3 without
    a Xing header, Ogg Vorbis cut between pages, ADTS AAC) cannot be told apart from a
    shorter recording and load with the whole samples present.

    Raises :class:`InputError` (message: path, problem, fix) when the file is missing,
    a folder, not a regular file, unreadable or empty (0 bytes) (all checked by
    :func:`~harmonycloak.io.files.check_input_file` before any decoder opens it), not
    audio ("is not a readable audio file (...)": the decoder's reason where it says more
    than "unknown format", e.g. a WAV header without a data chunk, else "no decoder
    recognised its contents"), truncated or damaged, has no samples or channels, holds
    NaN/infinite samples, or has a sample rate outside 8-192 kHz.
    """
    file = check_input_file(path, what="an audio file", export_hint=_REEXPORT_HINT)
    samples, sample_rate_hz = _decode_file(file)
    _check_decoded(file, samples, sample_rate_hz)
    if mono and samples.shape[0] > 1:
        samples = samples.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    return AudioClip(np.ascontiguousarray(samples), int(sample_rate_hz), source=os.fspath(path))


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Silence what C decoders print on file descriptor 2 (mpg123 inside libsndfile warns
    about damaged MP3 headers there); our own message says what is wrong instead."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode_file(file: Path) -> tuple[np.ndarray, int]:
    """Decoded samples ``[channels, samples]`` and rate; InputError when unreadable."""
    if file.suffix.lower() in _PYAV_SUFFIXES:
        return _decode_with_pyav(file, sndfile_reason=None, sndfile_malformed=False)
    with _native_stderr_silenced():
        try:
            sound = sf.SoundFile(file)
        except (sf.LibsndfileError, RuntimeError) as error:
            sound = None
            reason = _sndfile_reason(error)
            malformed = getattr(error, "code", None) == _SF_ERR_MALFORMED_FILE
        if sound is not None:
            with sound:
                return _read_sndfile(file, sound)
    return _decode_with_pyav(file, sndfile_reason=reason, sndfile_malformed=malformed)


def _read_sndfile(file: Path, sound: sf.SoundFile) -> tuple[np.ndarray, int]:
    stated = sound.frames
    try:
        data = sound.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise _damaged(file, _sndfile_reason(error)) from error
    if data.shape[0] < stated and _states_length(file, sound.format):
        raise _damaged(
            file, f"decoded {data.shape[0]} of the {stated} samples its header promises"
        )
    return np.ascontiguousarray(data.T), sound.samplerate


def _decode_with_pyav(
    file: Path, *, sndfile_reason: str | None, sndfile_malformed: bool
) -> tuple[np.ndarray, int]:
    """FFmpeg's verdict, told with libsndfile's reason where it recognised the format."""
    try:
        decoded = codecs.decode(file)
    except codecs.NotDecodableError as error:
        if sndfile_malformed:
            raise _damaged(file, sndfile_reason or str(error)) from error
        reason = next(
            (r for r in (sndfile_reason, str(error)) if r and _is_informative(r)),
            _NOT_RECOGNISED,
        )
        raise InputError(
            f"{file}: is not a readable audio file ({reason}); {_REEXPORT_HINT}"
        ) from error
    except codecs.CorruptStreamError as error:
        raise _damaged(file, str(error)) from error
    samples, rate, stated = decoded
    # MP4 states its length in milliseconds: allow 2 ms of rounding
    if stated is not None and samples.shape[1] < stated - rate // 500:
        raise _damaged(
            file, f"decoded {samples.shape[1]} of the {stated} samples its header promises"
        )
    return samples, rate


def _is_informative(reason: str) -> bool:
    """Whether a decoder's reason says more than "unknown format" (e.g. "Error in WAV
    file. No 'data' chunk marker", "no audio stream found")."""
    lowered = reason.strip().lower()
    return not any(lowered.startswith(generic) for generic in _UNINFORMATIVE_REASONS)


def _sndfile_reason(error: Exception) -> str:
    return str(getattr(error, "error_string", "") or error).strip().rstrip(".")


def _damaged(file: Path, reason: str) -> InputError:
    return InputError(
        f"{file}: is truncated or damaged ({reason}); export it again or restore it from a backup"
    )


def _states_length(file: Path, sndfile_format: str) -> bool:
    """Whether libsndfile's frame count for this file is a stated length, not a guess.

    It is for every format except MP3, where mpg123 estimates it from the file size
    unless a Xing/Info (LAME) or VBRI header gives the frame count.
    """
    if sndfile_format != "MP3":
        return True
    return _mp3_has_length_header(file)


def _mp3_has_length_header(file: Path) -> bool:
    with open(file, "rb") as handle:
        head = handle.read(1 << 16)
    start = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        size = 0
        for byte in head[6:10]:  # ID3v2 sizes are "syncsafe": 7 bits per byte
            size = (size << 7) | (byte & 0x7F)
        start = 10 + size + (10 if head[5] & 0x10 else 0)
        if start >= len(head):
            with open(file, "rb") as handle:
                handle.seek(start)
                head, start = handle.read(1 << 16), 0
    sync = start
    while sync + 1 < len(head) and not (head[sync] == 0xFF and head[sync + 1] & 0xE0 == 0xE0):
        sync += 1
    first_frame = head[sync:sync + 200]
    return any(tag in first_frame for tag in (b"Xing", b"Info", b"VBRI"))


def _check_decoded(file: Path, samples: np.ndarray, sample_rate_hz: int) -> None:
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise InputError(
            f"{file}: contains no audio ({samples.shape[0]} channels, {samples.shape[1]} "
            f"samples); {_REEXPORT_HINT}"
        )
    if not MIN_SAMPLE_RATE_HZ <= sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise InputError(
            f"{file}: sample rate {sample_rate_hz} Hz is outside the supported "
            f"{MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz; resample it (e.g. to 44100 Hz) first"
        )
    where = _first_non_finite(samples, sample_rate_hz)
    if where:
        raise InputError(f"{file}: contains NaN/infinite samples at {where}; re-export it")


def _first_non_finite(samples: np.ndarray, sample_rate_hz: int) -> str:
    """'' when all samples are finite, else where the first bad one is and how many."""
    finite = np.isfinite(samples)
    if finite.all():
        return ""
    bad_channel, bad_sample = np.nonzero(~finite)
    first = int(np.argmin(bad_sample))
    index, channel = int(bad_sample[first]), int(bad_channel[first])
    return (
        f"{index / sample_rate_hz:.3f} s (sample {index}, channel {channel}; "
        f"{bad_sample.size} bad samples in all)"
    )


# ---------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """What one output suffix means."""

    label: str
    max_channels: int
    sndfile_format: str | None = None  # lossless formats written by libsndfile
    subtypes: tuple[str, ...] = ()
    default_subtype: str | None = None
    codec: str | None = None  # lossy formats: a name from codecs.CODECS
    default_kbps: int | None = None


_FORMATS: dict[str, _Format] = {
    # libsndfile's own channel limit; WAV itself allows 65535.
    ".wav": _Format(
        "WAV", 1024, "WAV", ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"), "PCM_24"
    ),
    ".flac": _Format("FLAC", 8, "FLAC", ("PCM_16", "PCM_24"), "PCM_24"),
    ".mp3": _Format("MP3", 2, codec="mp3", default_kbps=192),
    ".ogg": _Format("Ogg Vorbis", 255, codec="vorbis", default_kbps=160),
    ".opus": _Format("Opus", 2, codec="opus", default_kbps=128),
    ".m4a": _Format("AAC (M4A)", 2, codec="aac", default_kbps=192),
}
_LOSSY_SUFFIXES = ", ".join(s for s, f in _FORMATS.items() if f.codec)
_INT_BITS = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
_WAV_LIMIT_BYTES = 0xFFFFFFFF - (1 << 20)  # beyond this, RIFF sizes overflow: use RF64


def save_audio(
    clip: AudioClip,
    path: str | os.PathLike[str],
    *,
    bitrate_kbps: float | None = None,
    subtype: str | None = None,
    force: bool = False,
) -> Path:
    """Write ``clip`` to ``path`` in the format its suffix names; returns the path.

    ``.wav``: ``subtype`` PCM_16, PCM_24 (default), PCM_32, FLOAT or DOUBLE; RF64 beyond
    4 GB. ``.flac``: PCM_16 or PCM_24 (default), at most 8 channels. ``.mp3``: LAME CBR,
    ``bitrate_kbps`` default 192, at most 2 channels, 8-48 kHz MPEG rates. ``.ogg``:
    Vorbis, default 160 kbps, reached through the measured quality mapping of
    :func:`harmonycloak.io.codecs.vorbis_compression_level` (VBR: the real average
    depends on the music, within about +-25 % on the measured real music). ``.opus``:
    default 128 kbps (constrained VBR), 8/12/16/24/48 kHz only, at most 2 channels.
    ``.m4a``: AAC-LC, default 192 kbps, at most 2 channels. A default bitrate is clamped
    to what the codec allows at the clip's rate; an explicit one outside that range is an
    error.

    Integer and lossy formats clip samples to [-1, 1]; integers are ``round(x * 2**(b-1))``
    limited to the code range, so +1.0 becomes the largest code and loading then saving
    at the same depth reproduces the file's integers exactly. FLOAT/DOUBLE WAV keep
    values beyond +-1. Output bytes are deterministic.

    The write is atomic (temporary sibling, fsync, rename; missing folders are created).
    Raises :class:`InputError` for an unknown suffix, a subtype/bitrate that does not
    apply or is not allowed, too many channels, an unsupported rate, an empty clip or
    NaN/infinite samples, an existing ``path`` without ``force``, and a ``path`` that is
    the clip's own source file (even with ``force``); :class:`CodecError` if an encoder
    fails anyway. Nothing is written when it raises.
    """
    target = Path(path)
    fmt = _format_for(target)
    _check_writable(target, clip, fmt)
    if fmt.codec is None:
        writer = _lossless_writer(target, clip, fmt, bitrate_kbps=bitrate_kbps, subtype=subtype)
    else:
        writer = _lossy_writer(target, clip, fmt, bitrate_kbps=bitrate_kbps, subtype=subtype)
    return atomic_write(target, writer, force=force, inputs=(clip.source,))


def _lossless_writer(
    target: Path, clip: AudioClip, fmt: _Format, *, bitrate_kbps: float | None, subtype: str | None
) -> Callable[[Path], None]:
    if bitrate_kbps is not None:
        raise InputError(
            f"{target}: a bitrate only applies to lossy formats ({_LOSSY_SUFFIXES}); "
            f"leave it out for {target.suffix}"
        )
    chosen = _pick_subtype(target, fmt, subtype)
    return lambda tmp: _write_sndfile(tmp, clip, fmt, chosen)


def _lossy_writer(
    target: Path, clip: AudioClip, fmt: _Format, *, bitrate_kbps: float | None, subtype: str | None
) -> Callable[[Path], None]:
    if subtype is not None:
        raise InputError(
            f"{target}: a subtype only applies to .wav and .flac; leave it out for "
            f"{target.suffix} (choose a bitrate instead)"
        )
    codec, kbps = fmt.codec or "", _pick_bitrate(target, fmt, clip, bitrate_kbps)
    return lambda tmp: _write_lossy(tmp, target, clip, codec, kbps)


def _format_for(target: Path) -> _Format:
    suffix = target.suffix.lower()
    if suffix not in _FORMATS:
        what = f"unknown audio format {suffix!r}" if suffix else "no file extension"
        raise InputError(f"{target}: {what}; use one of {', '.join(WRITABLE_AUDIO_SUFFIXES)}")
    return _FORMATS[suffix]


def _check_writable(target: Path, clip: AudioClip, fmt: _Format) -> None:
    if clip.num_samples == 0 or clip.channels == 0:
        raise InputError(f"{target}: the audio to write is empty (0 samples); nothing was written")
    if clip.channels > fmt.max_channels:
        raise InputError(
            f"{target}: {fmt.label} holds at most {fmt.max_channels} channels, this audio has "
            f"{clip.channels}; save as .wav (or .flac up to 8 channels) or mix down first"
        )
    where = _first_non_finite(clip.samples, clip.sample_rate_hz)
    if where:
        raise InputError(
            f"{target}: the audio to write contains NaN/infinite samples at {where}; "
            "nothing was written"
        )


def _pick_subtype(target: Path, fmt: _Format, subtype: str | None) -> str:
    chosen = (subtype or fmt.default_subtype or "").upper()
    if chosen not in fmt.subtypes:
        raise InputError(
            f"{target}: sample format {subtype!r} is not available for {fmt.label}; "
            f"use one of {', '.join(fmt.subtypes)}"
        )
    return chosen


def _pick_bitrate(target: Path, fmt: _Format, clip: AudioClip, bitrate_kbps: float | None) -> float:
    """The requested bitrate, or the format's default clamped to the codec's range."""
    codec = fmt.codec or ""
    kbps = bitrate_kbps
    if kbps is None:
        kbps = float(fmt.default_kbps or 0)
        try:
            low, high = codecs.bitrate_range_kbps(codec, clip.sample_rate_hz, clip.channels)
            kbps = min(max(kbps, low), high)
        except CodecError:
            pass  # check_encodable below reports the real problem
    try:
        codecs.check_encodable(codec, clip.sample_rate_hz, clip.channels, kbps)
    except CodecError as error:
        raise InputError(f"{target}: {error}") from error
    return kbps


def _write_sndfile(tmp: Path, clip: AudioClip, fmt: _Format, subtype: str) -> None:
    data = _to_file_samples(clip.samples, subtype)
    container = fmt.sndfile_format
    if container == "WAV" and data.nbytes > _WAV_LIMIT_BYTES:
        container = "RF64"
    sf.write(tmp, data, clip.sample_rate_hz, format=container, subtype=subtype)
    if subtype in ("FLOAT", "DOUBLE"):
        _zero_peak_timestamp(tmp)


def _to_file_samples(samples: np.ndarray, subtype: str) -> np.ndarray:
    """``[samples, channels]`` in the dtype libsndfile writes ``subtype`` from exactly.

    Integers are quantized here rather than by libsndfile, which scales by
    ``2**(b-1) - 1`` and wraps instead of clipping: ``round(x * 2**(b-1))`` clipped to
    the code range. 24-bit codes go in the top 24 bits of int32, as libsndfile expects.
    """
    frames = samples.T
    if subtype == "DOUBLE":
        return np.ascontiguousarray(frames, dtype=np.float64)
    if subtype == "FLOAT":
        return np.ascontiguousarray(frames, dtype=np.float32)
    bits = _INT_BITS[subtype]
    scale = float(2 ** (bits - 1))
    codes = np.clip(np.round(frames.astype(np.float64) * scale), -scale, scale - 1)
    if bits == 16:
        return np.ascontiguousarray(codes, dtype=np.int16)
    codes = codes.astype(np.int32)
    if bits == 24:
        codes <<= 8
    return np.ascontiguousarray(codes)


def _zero_peak_timestamp(path: Path) -> None:
    """Zero the time stamp libsndfile puts in a float WAV's PEAK chunk (deterministic bytes)."""
    with open(path, "r+b") as handle:
        head = handle.read(1 << 16)
        if head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 16 <= len(head):
            chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
            if chunk == b"PEAK":
                handle.seek(pos + 12)  # 'PEAK', size, version, then the time stamp
                handle.write(bytes(4))
                return
            if chunk == b"data":
                return
            pos += 8 + size + (size & 1)


def _write_lossy(tmp: Path, target: Path, clip: AudioClip, codec: str, kbps: float) -> None:
    clipped = np.clip(clip.samples, -1.0, 1.0)
    try:
        codecs.encode(clipped, clip.sample_rate_hz, tmp, codec=codec, bitrate_kbps=kbps)
    except CodecError as error:
        raise CodecError(f"{target}: {error}") from error
