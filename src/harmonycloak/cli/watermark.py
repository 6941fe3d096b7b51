"""``harmonycloak watermark keygen | embed | detect``: the keyed provenance watermark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from harmonycloak.cli import options
from harmonycloak.cli.options import err, out

app = typer.Typer(
    help="Keyed inaudible watermark carrying a 48-bit provenance id (track + issuer).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

KEY = typer.Option(..., "--key", help="Watermark key file (from `watermark keygen`).",
                   dir_okay=False, show_default=False)
OUTPUT = typer.Option(..., "-o", "--output", help="Where to write.", dir_okay=False,
                      show_default=False)


def _emit(as_json: bool, document: dict[str, Any], lines: list[tuple[str, str]]) -> None:
    if as_json:
        out.file.write(json.dumps(document) + "\n")
        return
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in lines:
        table.add_row(name, value)
    out.print(table)


@app.command("keygen")
def keygen(
    output: Path = OUTPUT,
    force: bool = options.FORCE,
    as_json: bool = options.JSON,
) -> None:
    """Create a new secret watermark key (JSON, readable by you only: mode 0600).

    Keep it private and back it up: whoever has it can read, remove or forge your mark,
    and without it nobody (you included) can find the mark again.
    """
    from harmonycloak.watermark import generate_key, save_key

    key = generate_key()
    path = save_key(key, output, force=force)
    err.print(f"wrote watermark key {key.key_id} to {path} (mode 0600); keep it secret "
              "and back it up", markup=False)
    _emit(as_json, {"key": str(path), "key_id": key.key_id, "scheme": key.scheme},
          [("key", str(path)), ("key id", key.key_id)])


@app.command("embed")
def embed(
    path: Path = options.input_path("Audio file to mark (WAV, FLAC, OGG, Opus, MP3, M4A)."),
    output: Path = OUTPUT,
    key: Path = KEY,
    payload: str = typer.Option(
        ..., "--payload", show_default=False,
        help="12 hex digits: 32-bit track id + 16-bit issuer id, e.g. 00000001abcd."),
    strength: float = typer.Option(
        1.0, "--strength", min=0.25, max=4.0,
        help="Scales the psychoacoustic caps: lower is more transparent, higher more robust."),
    force: bool = options.FORCE,
    as_json: bool = options.JSON,
) -> None:
    """Hide PAYLOAD in the music under KEY and write the marked file; then read it back.

    The output format follows the suffix of -o. The mark is verified on the written file
    (after its own encoding) and the result is reported.
    """
    from harmonycloak.io.audio import load_audio, save_audio
    from harmonycloak.watermark import detect, embed as embed_mark, load_key, parse_payload

    payload = parse_payload(payload)
    wkey = load_key(key)
    clip = load_audio(path)
    marked = embed_mark(clip, wkey, payload, strength=strength)
    over = int((abs(marked.samples) > 1.0).sum())
    if over:  # only where the input itself was already beyond full scale
        err.print(f"note: {over} samples of the input exceed full scale and are clipped in "
                  f"{output.name} (except in float WAV)", markup=False)
    written = save_audio(marked, output, force=force)
    check = detect(load_audio(written), wkey)
    verified = check.detected and check.payload == payload
    if not verified:
        err.print(f"warning: the mark could not be read back from {written} "
                  "(too short, too quiet, or too low a bitrate?)", markup=False)
    _emit(
        as_json,
        {"file": str(path), "output": str(written), "payload": payload, "key_id": wkey.key_id,
         "strength": strength, "duration_s": round(clip.duration_s, 3),
         "verified": verified, "verify_bit_errors": check.bit_errors},
        [("output", str(written)), ("payload", payload), ("key id", wkey.key_id),
         ("verified", "yes" if verified else "NO")],
    )


@app.command("detect")
def detect(
    path: Path = options.input_path("Audio file to examine."),
    key: Path = KEY,
    as_json: bool = options.JSON,
) -> None:
    """Look for KEY's watermark in a file and print the payload it carries.

    Exit code 0 whether or not a mark is found; ``detected`` says which. The
    false-alarm probability is a proven upper bound for audio that does not carry this
    key's mark.
    """
    from harmonycloak.io.audio import load_audio
    from harmonycloak.watermark import detect as find_mark, load_key

    wkey = load_key(key)
    clip = load_audio(path)
    found = find_mark(clip, wkey)
    document = {"file": str(path), **found.to_json()}
    if found.payload is not None:
        document["track_id"] = found.payload[:8]
        document["issuer_id"] = found.payload[8:]
    if found.detected:
        lines = [
            ("watermark", "found"),
            ("payload", f"{found.payload} (track {found.payload[:8]}, issuer {found.payload[8:]})"),
            ("false alarm", f"<= {found.false_alarm_probability:.1e}"),
            ("bit errors", f"{found.bit_errors} of {found.coded_bits} "
                           f"(limit {found.threshold_bit_errors})"),
            ("offset", f"{found.offset_s:.3f} s"),
            ("speed", f"{found.speed:.3f}x"),
        ]
    else:
        lines = [("watermark", "not found"), ("key id", found.key_id)]
    _emit(as_json, document, lines)
