"""The ``analyze --plot`` figure, drawn for a musician rather than an engineer.

Three panels sharing the frequency axis (log scale, with note names):

1. the spectrogram of the music with the dominant-tone line of the paper's 10 ms windows;
2. the masking threshold over time: how loud added sound may be and stay hidden;
3. the average spectrum against the median masking threshold and the threshold of
   hearing in quiet, with the hidden zone between them shaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harmonycloak.clip import AudioClip

__all__ = ["save_analysis_plot"]

_NOTE_TICKS = {f"A{o}": 27.5 * 2**o for o in range(8)}
_MIN_HZ = 30.0
_MAX_COLUMNS = 1500  # more frame columns than this are invisible at the figure's width
_MAX_HZ = 22_050.0  # nothing above is audible; high-rate files would squash the music


def _db_mean(db: np.ndarray, axis: int) -> np.ndarray:
    """Mean in the power domain, back in dB."""
    return 10.0 * np.log10(np.mean(10.0 ** (db / 10.0), axis=axis))


def _pool_frames(db: np.ndarray, times_s: np.ndarray, reduce: str) -> tuple[np.ndarray, np.ndarray]:
    """Shrink ``[frames, bins]`` to at most ``_MAX_COLUMNS`` frames for drawing: power mean
    (``"mean"``) for the spectrum, minimum (``"min"``) for the threshold."""
    factor = int(np.ceil(db.shape[0] / _MAX_COLUMNS))
    if factor <= 1:
        return db, times_s
    usable = (db.shape[0] // factor) * factor
    blocks = db[:usable].reshape(-1, factor, db.shape[1])
    pooled = _db_mean(blocks, 1) if reduce == "mean" else blocks.min(axis=1)
    return pooled, times_s[:usable].reshape(-1, factor).mean(axis=1)


def _note_axis(ax: Any, top_hz: float) -> None:
    twin = ax.twinx() if hasattr(ax, "twinx") else None
    if twin is None:
        return
    twin.set_yscale("log")
    twin.set_ylim(ax.get_ylim())
    ticks = {n: f for n, f in _NOTE_TICKS.items() if _MIN_HZ <= f <= top_hz}
    twin.set_yticks(list(ticks.values()), labels=list(ticks.keys()))
    twin.minorticks_off()


def _image(ax: Any, fig: Any, data_db: np.ndarray, times_s: np.ndarray, freqs_hz: np.ndarray,
           title: str, vmin: float, vmax: float) -> None:
    keep = (freqs_hz >= _MIN_HZ) & (freqs_hz <= _MAX_HZ)
    mesh = ax.pcolormesh(times_s, freqs_hz[keep], data_db[:, keep].T, shading="nearest",
                         cmap="magma", vmin=vmin, vmax=vmax, rasterized=True)
    ax.set_yscale("log")
    ax.set_ylim(_MIN_HZ, freqs_hz[keep][-1])
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title, loc="left", fontsize=11)
    fig.colorbar(mesh, ax=ax, pad=0.08, label="dB SPL")


def _draw(clip: AudioClip, masking: Any, tones: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    psd = _db_mean(masking.psd_db.cpu().numpy().reshape(-1, *masking.psd_db.shape[-2:]), 0)
    thr = masking.threshold_db.cpu().numpy().reshape(-1, *masking.threshold_db.shape[-2:]).min(axis=0)
    ath = masking.ath_db.cpu().numpy()
    freqs = masking.frequencies_hz.cpu().numpy()
    times = masking.frame_times_s.cpu().numpy()
    vmax = float(np.percentile(psd, 99.5)) + 3.0
    vmin = vmax - 90.0

    fig, axes = plt.subplots(3, 1, figsize=(12, 12), constrained_layout=True)
    name = Path(clip.source).name if clip.source else "audio"
    fig.suptitle(f"{name}: {clip.duration_s:.1f} s, {clip.sample_rate_hz} Hz, "
                 f"{clip.channels} channel{'s' if clip.channels != 1 else ''}", fontsize=13)

    psd_img, t_img = _pool_frames(psd, times, "mean")
    _image(axes[0], fig, psd_img, t_img, freqs, "Your music (spectrogram) and its dominant tone", vmin, vmax)
    tone_hz = tones.frequency_hz.cpu().numpy().reshape(-1, tones.frequency_hz.shape[-1])
    active = tones.active.cpu().numpy().reshape(tone_hz.shape)
    t_tone = np.broadcast_to((np.arange(tone_hz.shape[-1]) + 0.5) * tones.window_s, tone_hz.shape)
    axes[0].plot(t_tone[active], tone_hz[active], ".", color="cyan", markersize=1.5,
                 label=f"dominant tone ({tones.window_s * 1000:g} ms windows, all channels)")
    axes[0].legend(loc="upper right", fontsize=8, markerscale=6)
    _note_axis(axes[0], min(float(freqs[-1]), _MAX_HZ))

    thr_img, t_img = _pool_frames(thr, times, "min")
    _image(axes[1], fig, thr_img, t_img, freqs,
           "Masking threshold: added sound below this level stays hidden under the music", vmin, vmax)
    axes[1].set_xlabel("time (s)")

    ax = axes[2]
    keep = (freqs >= _MIN_HZ) & (freqs <= _MAX_HZ)
    music = _db_mean(psd, 0)[keep]
    mask = np.median(thr, axis=0)[keep]
    ax.semilogx(freqs[keep], music, color="black", lw=1.2, label="your music (average spectrum)")
    ax.semilogx(freqs[keep], mask, color="tab:orange", lw=1.5, label="masking threshold (median over time)")
    ax.semilogx(freqs[keep], ath[keep], color="tab:blue", lw=1.2, ls="--", label="threshold of hearing in quiet")
    ax.fill_between(freqs[keep], ath[keep], mask, where=mask > ath[keep], color="tab:orange", alpha=0.2,
                    label="hidden zone: audible alone, masked by the music")
    ax.set_xlim(_MIN_HZ, freqs[keep][-1])
    # The threshold in quiet climbs steeply near 20 kHz; keep the music in view.
    ax.set_ylim(min(-10.0, float(ath[keep].min()) - 5), float(music.max()) + 15)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("level (dB SPL; full-scale sine = 96)")
    ax.set_title("Where sound can hide", loc="left", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def check_plot_path(path: Path, *, source: str | None, force: bool) -> None:
    """Refuse a plot path early (before minutes of analysis): not .png, an existing file
    without ``force``, or the input itself."""
    from harmonycloak.errors import InputError
    from harmonycloak.io.files import same_file

    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: the plot is written as PNG; give a file name ending in .png")
    if source is not None and path.exists() and same_file(path, source):
        raise InputError(f"{path}: would overwrite the input; choose another name for the plot")
    if path.exists() and not force:
        raise InputError(f"{path} already exists; use --force to replace it")


def save_analysis_plot(clip: AudioClip, masking: Any, tones: Any, path: Path, *, force: bool = False) -> Path:
    """Draw the analysis figure to the PNG ``path`` (atomic; no overwrite without
    ``force``; never over the clip's source file)."""
    import matplotlib.pyplot as plt

    from harmonycloak.io.files import atomic_write

    check_plot_path(path, source=clip.source, force=force)
    fig = _draw(clip, masking, tones)
    inputs = (clip.source,) if clip.source else ()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100),
                            force=force, inputs=inputs)
    finally:
        plt.close(fig)
