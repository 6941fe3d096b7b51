"""The evaluation's outputs: ``results.json``, ``report.md`` and PNG plots.

``report.md`` mirrors the paper's tables on our own runs (HarmonyCloak, section 5 and
appendix): the training losses (figure 5 analogue), the generated music (table 3), the
quality of the protected music (table 5), protected shares (table 7), removal attacks
(table 9), baselines at equal quality (table 10) and the who-is-it test (figure 8). The
plots: loss curves, confusion matrices, survival per attack, quality against strength.
Matplotlib draws headless (Agg); every file is written atomically, and nothing that
exists is replaced without ``force``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harmonycloak.errors import InputError
from harmonycloak.io.files import atomic_write

__all__ = ["OUTPUT_FILES", "PLOT_FILES", "check_out_dir", "render_markdown", "write_outputs"]

WEAK_EFFECT = 0.05
"""Below this effect (5 % lower loss) survival ratios are not worth reading."""
PLOT_FILES = ("loss_curves.png", "confusion.png", "survival.png", "quality_vs_strength.png")
OUTPUT_FILES = ("results.json", "report.md", *PLOT_FILES)

_SYMBOLIC = (("empty_bar_rate", "EB %", 100.0), ("used_pitch_classes", "UPC", 1.0),
             ("qualified_note_rate", "QN %", 100.0), ("drum_pattern_rate", "DP %", 100.0),
             ("tonal_distance", "TD", 1.0))


def check_out_dir(out_dir: str | Path, *, force: bool) -> Path:
    """The output folder, refused before any work when it is a file or already holds
    an evaluation and ``force`` is off."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file; give --out a folder for the report")
    existing = [name for name in OUTPUT_FILES if (path / name).exists()]
    if existing and not force:
        raise InputError(f"{path}: already holds an evaluation ({', '.join(existing)}); use "
                         "--force to replace it, or another --out folder")
    return path


def write_outputs(results: dict[str, Any], out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Write ``results.json``, ``report.md`` and the plots into ``out_dir`` (created);
    returns the paths written. ``results["plots"]`` lists the plot files."""
    path = check_out_dir(out_dir, force=force)
    path.mkdir(parents=True, exist_ok=True)
    plots = _draw_plots(results, path, force=force)
    results["plots"] = [p.name for p in plots]
    text = json.dumps(results, indent=2, allow_nan=False) + "\n"
    written = [atomic_write(path / "results.json", lambda tmp: Path(tmp).write_text(text), force=force)]
    markdown = render_markdown(results)
    written.append(atomic_write(path / "report.md", lambda tmp: Path(tmp).write_text(markdown),
                                force=force))
    return written + plots


# ---------------------------------------------------------------------------- markdown


def _f(value: Any, digits: int = 3, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, float)):
        # from 1000 up, whole numbers (6295 s, not 6e+03 s); below, ``digits`` decimals
        return f"{value * scale:.0f}" if abs(value * scale) >= 1000 else f"{value * scale:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _generated_columns(kind: str) -> tuple[list[str], Any]:
    if kind == "audio":
        return ["FAD to P"], lambda g: [_f((g or {}).get("fad"), 3)]
    return ([label for _, label, _ in _SYMBOLIC],
            lambda g: [_f((g or {}).get(key), 2, scale) for key, _, scale in _SYMBOLIC])


def render_markdown(results: dict[str, Any]) -> str:
    """The report as Markdown (every table of the module docstring)."""
    kind = results["kind"]
    data, profile = results["data"], results["profile"]
    lines = [f"# harmonycloak evaluation: {results['profile']['name']} profile, {kind}, "
             f"{results['mode']} against `{results['target']}`", ""]
    lines += [f"harmonycloak {results['version']}; seed {results['seed']}; device "
              f"`{results['device']}`; {_f(results['timing_s']['total'], 0)} s in all. "
              f"Data: `{data['dir']}`, {data['clips']} "
              f"{'excerpts' if kind == 'audio' else 'phrases'} of {len(data['labels'])} labels; "
              f"protected artist **{data['protected_label']}** ({data['protected_clips']} clips), "
              f"the rest {data['rest_clips']}.", ""]
    lines += _headline(results)
    lines += _section_effectiveness(results)
    lines += _section_generated(results)
    lines += _section_quality(results)
    lines += _section_shares(results)
    lines += _section_attacks(results)
    lines += _section_baselines(results)
    lines += _section_who(results)
    lines += ["## Settings and notes", ""]
    lines += [f"- profile: `{json.dumps(profile, sort_keys=True)}`",
              f"- pre-trained model: `{results['pretrained']['model']}`; FAD embedding: "
              f"{results['pretrained']['embedder'] or 'n/a (MIDI)'}",
              "- time per stage (s): " + ", ".join(f"{k} {_f(v, 1)}" for k, v in results["timing_s"].items())]
    lines += [f"- {note}" for note in [*data["notes"], *results["notes"]]]
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in results.get("plots", [])), ""]
    return "\n".join(lines)


def _headline(results: dict[str, Any]) -> list[str]:
    scratch = results["effectiveness"]["scratch"]
    finetune = results["effectiveness"]["finetune"]
    lines = ["## Headline", ""]
    lines.append(f"- Attacker trained from scratch with all of the protected artist's music "
                 f"protected: loss on that music {_f(scratch['loss_ratio_seen'])}× the clean "
                 f"run's (effect {_f(scratch['effect'])}; the paper's figure 5 shows losses "
                 f"near 0, an effect near 1). On the clean originals: "
                 f"{_f(scratch['loss_ratio_clean'])}× (above 1: it learned less of the real music).")
    lines.append(f"- Pre-trained model fine-tuned on the protected music: loss ratio "
                 f"{_f(finetune['loss_ratio_seen'])} (effect {_f(finetune['effect'])}).")
    q = results["quality"]
    if results["kind"] == "audio":
        lines.append(f"- Quality of the protected music: ViSQOL median {_f(q['visqol']['median'], 2)}, "
                     f"SNR median {_f(q['snr_db']['median'], 1)} dB, NMR p95 median "
                     f"{_f(q['nmr_p95_db']['median'], 2)} dB.")
    before = results["attacks"][0]["effect_before"] if results["attacks"] else None
    if before is not None and abs(before) < WEAK_EFFECT:
        lines.append(f"- The effect before any attack is only {_f(before)} (below {WEAK_EFFECT}): "
                     "the survival figures below are ratios of noise-sized numbers; read them "
                     "as 'there was nothing to remove'.")
    broken = [a["name"] for a in results["attacks"]
              if a["survival"] is not None and a["survival"] < 0.5]
    unknown = [a["name"] for a in results["attacks"] if a["survival"] is None]
    if broken:
        lines.append(f"- Attacks that remove more than half of the effect: {', '.join(broken)}.")
    if unknown:
        lines.append(f"- Survival undefined (no effect to survive, or a run failed): {', '.join(unknown)}.")
    who = results["who_is_it"]
    lines.append(f"- Who is it: music of a model fine-tuned on the protected artist is labelled as "
                 f"that artist {_f(who['protected_recognized']['clean'], 2)} of the time after "
                 f"clean data, {_f(who['protected_recognized']['protected'], 2)} after protected data.")
    return lines + [""]


def _section_effectiveness(results: dict[str, Any]) -> list[str]:
    rows = []
    for setting, pair in results["effectiveness"].items():
        rows.append([setting, _f(pair["final_loss"]["clean"]), _f(pair["final_loss"]["protected"]),
                     _f(pair["loss_ratio_seen"]), _f(pair["loss_ratio_clean"]), _f(pair["effect"])])
    return (["## Training losses (figure 5 analogue)", "",
             "Mean loss on the protected artist's music over the evaluation steps after 0; "
             "*seen*: as each attacker trained on it, *clean*: on the original music. "
             "Same seed, same batches.", ""]
            + _table(["setting", "final loss, clean run", "final loss, protected run",
                      "ratio (seen)", "ratio (clean originals)", "effect"], rows))


def _section_generated(results: dict[str, Any]) -> list[str]:
    names, cells = _generated_columns(results["kind"])
    g = results["generated"]
    labels = {"reference": ("other artists' real music (reference)" if results["kind"] == "audio"
                            else "protected artist's music (training data)"),
              "scratch_clean": "from scratch, clean data", "scratch_protected": "from scratch, protected data",
              "finetune_clean": "fine-tuned, clean data", "finetune_protected": "fine-tuned, protected data"}
    rows = [[labels[k], *cells(g.get(k))] for k in labels]
    note = ("FAD between the generated music and the protected artist's clean music in the "
            "embedding named below (lower: closer to the artist; the reference row is the "
            "other artists' real music, for scale)."
            if results["kind"] == "audio" else
            "MuseGAN's metrics of the generated phrases (EB, QN, DP in %; TD mean over track pairs).")
    return ["## Generated music (table 3 analogue)", "", note, ""] + _table(["model", *names], rows)


def _section_quality(results: dict[str, Any]) -> list[str]:
    q = results["quality"]
    lines = ["## Quality of the protected music (table 5 analogue)", ""]
    if results["kind"] == "audio":
        rows = [["SNR (dB) ↑", _f(q["snr_db"]["median"], 2), _f(q["snr_db"]["worst"], 2), q["snr_db"]["clips"]],
                ["NMR p95 (dB) ↓", _f(q["nmr_p95_db"]["median"], 2), _f(q["nmr_p95_db"]["worst"], 2),
                 q["nmr_p95_db"]["clips"]],
                ["ViSQOL v3 ↑", _f(q["visqol"]["median"], 2), _f(q["visqol"]["worst"], 2), q["visqol"]["clips"]]]
        lines += _table(["measure", "median", "worst", "clips"], rows)
        if "fad_protected_to_clean" in q:
            lines += [f"FAD of the protected clips to the clean ones: {_f(q['fad_protected_to_clean'])}; "
                      f"embedding shift: `{json.dumps(q.get('embedding_shift'))}`.", ""]
        return lines
    td = q["tonal_distance"]
    pairs = list(td["clean"])
    rows = [["clean", *[_f(td["clean"][k], 2) for k in pairs]],
            ["protected", *[_f(td["protected"][k], 2) for k in pairs]]]
    return lines + _table(["music", *pairs], rows) + [
        f"Velocity change of the changed cells: mean {_f(q['velocity_change_mean'], 2)}, max "
        f"{_f(q['velocity_change_max'], 1)} MIDI steps; {_f(q['cells_changed_share'], 4, 100)} % of cells changed.", ""]


def _section_shares(results: dict[str, Any]) -> list[str]:
    names, cells = _generated_columns(results["kind"])
    rows = [[f"{r['share'] * 100:g} %", r["protected_clips"], _f(r["loss_ratio_seen"]),
             _f(r["loss_ratio_clean"]), _f(r["effect"]), *cells(r["generated"])]
            for r in results["shares"]]
    return (["## Protected share (table 7 analogue)", "",
             "Share of the protected artist's clips that carry the cloak; one attacker from "
             "scratch each (equal counts share a run).", ""]
            + _table(["share", "clips", "ratio (seen)", "ratio (clean originals)", "effect", *names], rows))


def _section_attacks(results: dict[str, Any]) -> list[str]:
    names, cells = _generated_columns(results["kind"])
    rows = [[a["name"], _f(a["effect_before"]), _f(a["effect_after"]), _f(a["survival"], 2),
             *cells((a["generated"] or {}).get("protected")), a["description"]]
            for a in results["attacks"]]
    steps = results["profile"]["attack_steps"]
    return (["## Removal attacks (table 9 analogue)", "",
             f"Each attack applied to the protected artist's clips, clean and protected; two "
             f"attackers from scratch over {steps} steps. Survival = effect after / effect "
             "before (1: nothing removed, 0: protection gone).", ""]
            + _table(["attack", "effect before", "effect after", "survival",
                      *[f"{n} (protected)" for n in names], "what it does"], rows))


def _section_baselines(results: dict[str, Any]) -> list[str]:
    if not results["baselines"]:
        return ["## Baselines at equal quality (table 10 analogue)", "",
                "Not measured for MIDI (the baselines perturb audio).", ""]
    names, cells = _generated_columns(results["kind"])
    rows = [[b["name"], _f(b["visqol"], 2), _f(b["snr_db"], 1), _f(b["nmr_p95_db"], 2),
             _f(b["effect"]), *cells(b["generated"]), "; ".join(b["notes"])]
            for b in results["baselines"]]
    return (["## Baselines at equal quality (table 10 analogue)", "",
             "Each baseline matched to the cloak's median ViSQOL on the same clips, trained on "
             f"like the cloak over {results['profile']['attack_steps']} steps.", ""]
            + _table(["method", "ViSQOL", "SNR dB", "NMR p95 dB", "effect", *names, "notes"], rows))


def _section_who(results: dict[str, Any]) -> list[str]:
    who = results["who_is_it"]
    labels = who["labels"]
    lines = ["## Who is it (figure 8 analogue)", "",
             "A classifier trained on clean music labels the music generated by the pre-trained "
             "model fine-tuned on each artist (rows: the artist imitated; columns: the label "
             "given; each cell counts clips, real or generated). The protected artist is "
             f"**{labels[who['protected_label']]}**.", ""]
    for title, key in (("classifier on held-out real clips", "real_holdout"),
                       ("fine-tuned on clean music", "clean"), ("protected artist's music protected", "protected")):
        matrix = who[key]
        lines += [f"**{title}**", ""]
        lines += _table(["imitated \\ labelled", *labels],
                        [[labels[i], *[str(int(v)) for v in row]] for i, row in enumerate(matrix)])
    return lines


# ------------------------------------------------------------------------------- plots


def _draw_plots(results: dict[str, Any], folder: Path, *, force: bool) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    drawers = {"loss_curves.png": _plot_losses, "confusion.png": _plot_confusion,
               "survival.png": _plot_survival, "quality_vs_strength.png": _plot_quality}
    written = []
    for name, draw in drawers.items():
        fig = draw(plt, results)
        try:
            written.append(atomic_write(folder / name, lambda tmp: fig.savefig(tmp, format="png", dpi=110),
                                        force=force))
        finally:
            plt.close(fig)
    return written


def _plot_losses(plt: Any, results: dict[str, Any]) -> Any:
    curves = results["curves"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for row in results["shares"]:
        run = curves[row["run"]]
        steps, values = zip(*run["seen"])
        axes[0].plot(steps, values, marker="o", label=f"{row['share'] * 100:g} % protected")
    for run_id, label in (("finetune-clean", "clean"), ("finetune-protected", "protected")):
        steps, values = zip(*curves[run_id]["seen"])
        axes[1].plot(steps, values, marker="o", label=label)
        steps, values = zip(*curves[run_id]["clean"])
        axes[1].plot(steps, values, linestyle="--", label=f"{label} (on the originals)")
    axes[0].set_title("from scratch: loss on the protected artist's music")
    axes[1].set_title("fine-tuning the pre-trained model")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def _plot_confusion(plt: Any, results: dict[str, Any]) -> Any:
    import numpy as np

    who = results["who_is_it"]
    keys = (("real_holdout", "real clips (held out)"), ("clean", "fine-tuned on clean"),
            ("protected", "fine-tuned, artist protected"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    labels = who["labels"]
    for ax, (key, title) in zip(axes, keys):
        m = np.asarray(who[key], dtype=float)
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1e-12)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels=labels, fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("classifier says")
    axes[0].set_ylabel("music of / imitating")
    return fig


def _plot_survival(plt: Any, results: dict[str, Any]) -> Any:
    attacks = results["attacks"]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(attacks) + 2), 4), constrained_layout=True)
    names = [a["name"] for a in attacks]
    values = [a["survival"] if a["survival"] is not None else 0.0 for a in attacks]
    bars = ax.bar(range(len(names)), values,
                  color=["#999999" if a["survival"] is None else "#3b75af" for a in attacks])
    for bar, a in zip(bars, attacks):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                "n/a" if a["survival"] is None else f"{a['survival']:.2f}", ha="center", va="bottom",
                fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("share of the effect that survives")
    ax.set_title(f"survival per attack (effect before: {_f(attacks[0]['effect_before']) if attacks else 'n/a'})")
    return fig


def _plot_quality(plt: Any, results: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    audio = results["kind"] == "audio"
    points = [(b["name"], b["visqol"] if audio else None, b["effect"]) for b in results["baselines"]]
    if not points:  # MIDI: effect per protected share instead
        for r in results["shares"]:
            ax.scatter(r["share"] * 100, r["effect"] if r["effect"] is not None else 0.0)
        ax.set_xlabel("protected share (%)")
    else:
        for name, visqol, eff in points:
            if visqol is None or eff is None:
                continue
            ax.scatter(visqol, eff, s=60, marker="*" if name == "harmonycloak" else "o")
            ax.annotate(name, (visqol, eff), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel("ViSQOL of the protected music (higher: sounds closer to the original)")
    ax.set_ylabel("protection effect (1 − loss ratio)")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_title("quality against strength")
    ax.grid(alpha=0.3)
    return fig
