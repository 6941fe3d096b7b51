"""Convert the music21 corpus to MIDI files: the dev corpus for the symbolic path.

    python scripts/make_dev_midi.py                     # default subset -> data/dev-midi/
    python scripts/make_dev_midi.py --limit 0 --collections all   # everything (~45 min)
    python scripts/make_dev_midi.py --limit 2 --out /tmp/midi --collections bach essen

music21 ships its corpus inside the pip package (``pip install music21``; it is in the
``dev`` extra), so this needs no network. Collections, each in ``OUT/<collection>/``:

``bach``        Bach chorales (and the few other Bach pieces music21 ships), 4-5 voices
``essen``       Essen folk songs (ABC, one melody each), ``essen/<book>/<tune>.mid``
``palestrina``  Palestrina masses and motets (Humdrum), 4-8 voices
``classical``   other multi-part pieces: string quartets of Haydn, Mozart and Beethoven,
                Monteverdi madrigals, trecento and Josquin polyphony, piano pieces ...

Pieces are taken in sorted path order (Essen: book order, then tune order in the
book), so a run is deterministic; ``--limit N`` keeps the first N pieces of every
collection (0 = all). The whole corpus (10,436 files, 1.6 million notes) took 43 CPU
minutes here: per piece about 0.17 s for a chorale, 0.05 s for a folk song, 0.6 s for a
Palestrina movement and 5 s for a "classical" one (a whole Beethoven quartet in one
file: up to 9 minutes). So the default is 400 pieces each of bach, essen and
palestrina (1,200 files, 29,076 bars, 308,451 notes in about 4 CPU minutes); ask for
``classical`` (or ``all``) by name.

Each part keeps the instrument music21 assigns it: most parts have none and come out
as program 0 (acoustic grand piano, MuseGAN's Piano track); Palestrina's voices come
out as program 53 (voice oohs) and the quartets' parts as 48 (string ensemble), both
MuseGAN's Strings track. Pieces that fail to parse or convert, or that have no
notes, are skipped and counted. Files are overwritten; files from an earlier, larger
run stay.

At the end it prints the files, bars and notes per collection, the time taken, and how
``harmonycloak.io.midi.load_midi(..., grouping="musegan")`` sees the written files:
notes per MuseGAN track (Bass, Drums, Guitar, Piano, Strings) and the means of the
symbolic metrics (EB, UPC, QN, DP) per track over the files where it has notes.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_LIMIT = 400
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "dev-midi"
COLLECTIONS = ("bach", "essen", "palestrina", "classical")
DEFAULT_COLLECTIONS = ("bach", "essen", "palestrina")
_CLASSICAL_DIRS = (
    "beach", "beethoven", "chopin", "ciconia", "corelli", "cpebach", "handel", "haydn",
    "joplin", "josquin", "luca", "lusitano", "monteverdi", "mozart", "schoenberg",
    "schubert", "schumann_clara", "schumann_robert", "trecento", "verdi", "weber", "webern",
)  # fmt: skip
_SCORE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn", ".abc")  # preferred first


@dataclass(frozen=True)
class Piece:
    """One piece to convert: its output path under the collection, and a loader."""

    name: str  # relative output path without suffix, e.g. "han1/0001"
    load: Callable[[], object]  # returns a music21 Score (or Opus)


@dataclass
class Tally:
    """What happened to one collection."""

    files: int = 0
    failed: int = 0
    reasons: Counter = field(default_factory=Counter)
    bars: int = 0
    notes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    slowest: list[tuple[float, str]] = field(default_factory=list)  # (seconds, piece)


# ---------------------------------------------------------------------------- corpus


def _corpus_root() -> Path:
    import music21

    return Path(music21.__file__).resolve().parent / "corpus"


def _score_files(root: Path, directories: tuple[str, ...]) -> list[Path]:
    """Score files under ``directories`` of the corpus, sorted, one file per piece
    (where a piece comes as both MusicXML and Humdrum, the MusicXML)."""
    chosen: dict[Path, Path] = {}
    for directory in directories:
        for path in sorted((root / directory).rglob("*")):
            if path.suffix not in _SCORE_SUFFIXES or not path.is_file():
                continue
            key = path.with_suffix("")
            if key not in chosen or _SCORE_SUFFIXES.index(path.suffix) < _SCORE_SUFFIXES.index(
                chosen[key].suffix
            ):
                chosen[key] = path
    return sorted(chosen.values())


def _parse_file(path: Path) -> Callable[[], object]:
    def load() -> object:
        from music21 import converter

        return converter.parse(path)

    return load


def _parse_abc(text: str) -> Callable[[], object]:
    def load() -> object:
        from music21 import converter

        return converter.parse(text, format="abc")

    return load


def _essen_pieces(root: Path) -> Iterator[Piece]:
    """Every tune of every Essen book, split at its ``X:`` line (music21's own test
    files, ``test*.abc``, which repeat a handful of tunes, are left out)."""
    for book in sorted((root / "essenFolksong").glob("*.abc")):
        if book.stem.startswith("test"):
            continue
        text = book.read_text(encoding="utf-8", errors="replace")
        header, *tunes = re.split(r"(?m)^(?=X:)", text)
        for index, tune in enumerate(tunes, start=1):
            yield Piece(f"{book.stem}/{index:04d}", _parse_abc(header + tune))


def pieces(collection: str, root: Path | None = None) -> Iterator[Piece]:
    """The pieces of one collection, in a fixed order."""
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}; use one of {', '.join(COLLECTIONS)}")
    root = root or _corpus_root()
    if collection == "essen":
        yield from _essen_pieces(root)
        return
    directories = {"bach": ("bach",), "palestrina": ("palestrina",)}.get(
        collection, _CLASSICAL_DIRS
    )
    for path in _score_files(root, directories):
        relative = path.relative_to(root / directories[0] if len(directories) == 1 else root)
        yield Piece(str(relative.with_suffix("")), _parse_file(path))


# ------------------------------------------------------------------------- convert


def _scores(parsed: object) -> list[object]:
    from music21 import stream

    if isinstance(parsed, stream.Opus):
        return list(parsed.scores)
    return [parsed]


def _unshare_time_signatures(score: object) -> None:
    """Give every measure its own TimeSignature object.

    music21's ABC reader marks the short measures of some Essen tunes with a meter of
    their own (4/2, 4/4, 4/2 ...) and reuses one TimeSignature object for every return
    to the main meter; its MIDI writer then fails ("already found in this Stream") on
    about one tune in ten. A copy per measure changes no note, bar or meter.
    """
    import copy

    from music21 import meter

    seen: set[int] = set()
    for signature in list(score.recurse().getElementsByClass(meter.TimeSignature)):
        for site in list(signature.sites.get()):
            if site is None or signature not in site.elements:
                continue
            if id(signature) in seen:
                site.replace(signature, copy.deepcopy(signature))
            seen.add(id(signature))


def convert(piece: Piece, directory: Path) -> list[Path]:
    """Parse ``piece`` and write it as MIDI (an ABC or Humdrum file holding several
    pieces gives ``name-1.mid``, ``name-2.mid`` ...). Raises on failure; a piece without
    notes raises ValueError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = _scores(piece.load())
        written = []
        for index, score in enumerate(scores, start=1):
            if score.recurse().notes.first() is None:
                continue
            suffix = f"-{index}" if len(scores) > 1 else ""
            path = directory / f"{piece.name}{suffix}.mid"
            path.parent.mkdir(parents=True, exist_ok=True)
            _unshare_time_signatures(score)
            score.write("midi", fp=str(path))
            written.append(path)
    if not written:
        raise ValueError("no notes")
    return written


# --------------------------------------------------------------------------- stats


@dataclass
class MuseganView:
    """How the musegan grouping of load_midi sees the written files."""

    notes: np.ndarray = field(default_factory=lambda: np.zeros(5, np.int64))
    files: np.ndarray = field(default_factory=lambda: np.zeros(5, np.int64))  # with notes
    metrics: dict[str, list[float]] = field(default_factory=dict)  # of files with notes
    unreadable: int = 0

    def add(self, path: Path) -> int:
        """Add one file; returns its bars (0 when load_midi rejects it)."""
        from harmonycloak.errors import InputError
        from harmonycloak.evaluate.metrics.symbolic import bar_lengths, track_metrics
        from harmonycloak.io.midi import load_midi

        try:
            roll = load_midi(path, grouping="musegan")
        except InputError:
            self.unreadable += 1
            return 0
        notes = roll.onsets.sum(axis=(1, 2))
        self.notes += notes
        self.files += notes > 0
        for index, (track, values) in enumerate(track_metrics(roll).items()):
            if notes[index]:
                for metric, value in values.items():
                    self.metrics.setdefault(f"{track}/{metric}", []).append(value)
        return len(bar_lengths(roll))


def _midi_notes(path: Path) -> int:
    from symusic import Score

    return int(Score(str(path)).note_num())


# ---------------------------------------------------------------------------- main


class _Progress:
    """A rich progress bar on a terminal, a plain line every 100 pieces otherwise."""

    def __init__(self) -> None:
        self.rich = None
        if sys.stderr.isatty():
            from rich.progress import MofNCompleteColumn, Progress

            self.rich = Progress(*Progress.get_default_columns(), MofNCompleteColumn())
            self.rich.start()

    def task(self, name: str, total: int) -> object:
        if self.rich is not None:
            return self.rich.add_task(name, total=total)
        return name

    def advance(self, task: object, done: int, tally: Tally) -> None:
        if self.rich is not None:
            self.rich.update(task, completed=done)
        elif done % 100 == 0:
            print(
                f"  {task}: {done} pieces, {tally.files} files, {tally.failed} skipped",
                flush=True,
            )

    def stop(self) -> None:
        if self.rich is not None:
            self.rich.stop()


def _count(collection: str, limit: int, root: Path) -> int:
    """Number of pieces a run will visit (for Essen, its X: lines)."""
    if collection == "essen":
        total = sum(
            len(re.findall(r"(?m)^X:", book.read_text(encoding="utf-8", errors="replace")))
            for book in (root / "essenFolksong").glob("*.abc")
            if not book.stem.startswith("test")
        )
    else:
        total = sum(1 for _ in pieces(collection, root))
    return min(total, limit) if limit else total


def run(out: Path, collections: tuple[str, ...], limit: int) -> dict[str, Tally]:
    """Convert, print progress and the summary; returns the tally per collection."""
    root = _corpus_root()
    tallies: dict[str, Tally] = {}
    view = MuseganView()
    progress = _Progress()
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        for collection in collections:
            tally = tallies[collection] = Tally()
            task = progress.task(collection, _count(collection, limit, root))
            t0, cpu0 = time.perf_counter(), time.process_time()
            for done, piece in enumerate(pieces(collection, root), start=1):
                if limit and done > limit:
                    break
                t_piece = time.perf_counter()
                try:
                    written = convert(piece, out / collection)
                except Exception as exc:  # music21 raises many kinds; count and move on
                    tally.failed += 1
                    tally.reasons[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
                else:
                    for path in written:
                        tally.files += 1
                        tally.notes += _midi_notes(path)
                        tally.bars += view.add(path)
                tally.slowest = sorted(
                    [*tally.slowest, (time.perf_counter() - t_piece, piece.name)], reverse=True
                )[:3]
                progress.advance(task, done, tally)
            tally.seconds = time.perf_counter() - t0
            tally.cpu_seconds = time.process_time() - cpu0
            if progress.rich is None:
                print(
                    f"{collection}: {tally.files} files, {tally.failed} skipped, "
                    f"{tally.seconds:.0f} s",
                    flush=True,
                )
    finally:
        progress.stop()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    _summary(out, tallies, view, seconds, cpu_seconds, limit)
    return tallies


def _summary(
    out: Path,
    tallies: dict[str, Tally],
    view: MuseganView,
    seconds: float,
    cpu_seconds: float,
    limit: int,
) -> None:
    from harmonycloak.io.midi import MUSEGAN_TRACKS

    print(f"\nMIDI files in {out} (limit {limit or 'none'} per collection)")
    print(
        f"{'collection':<12}{'files':>7}{'skipped':>9}{'bars':>9}{'notes':>10}"
        f"{'time':>8}{'cpu':>8}"
    )
    for name, t in tallies.items():
        print(
            f"{name:<12}{t.files:>7}{t.failed:>9}{t.bars:>9}{t.notes:>10}"
            f"{t.seconds:>7.0f}s{t.cpu_seconds:>7.0f}s"
        )
    total = Tally(
        files=sum(t.files for t in tallies.values()),
        failed=sum(t.failed for t in tallies.values()),
        bars=sum(t.bars for t in tallies.values()),
        notes=sum(t.notes for t in tallies.values()),
    )
    print(
        f"{'total':<12}{total.files:>7}{total.failed:>9}{total.bars:>9}{total.notes:>10}"
        f"{seconds:>7.0f}s{cpu_seconds:>7.0f}s"
    )
    for name, t in tallies.items():
        for reason, count in t.reasons.most_common(3):
            print(f"  skipped in {name}: {count} x {reason}")
        slow = ", ".join(f"{piece} {seconds:.1f} s" for seconds, piece in t.slowest)
        print(f"  slowest in {name}: {slow}")

    print("\nAs MuseGAN's five tracks (load_midi grouping='musegan'):")
    print(f"{'track':<10}{'files':>7}{'notes':>10}{'EB %':>8}{'UPC':>7}{'QN %':>7}{'DP %':>7}")
    for index, track in enumerate(MUSEGAN_TRACKS):

        def mean(metric: str, scale: float = 1.0) -> str:
            values = np.asarray(view.metrics.get(f"{track}/{metric}", []), dtype=np.float64)
            if values.size == 0 or np.isnan(values).all():
                return "-"
            return f"{scale * np.nanmean(values):.1f}" if scale > 1 else f"{np.nanmean(values):.2f}"

        print(
            f"{track:<10}{int(view.files[index]):>7}{int(view.notes[index]):>10}"
            f"{mean('empty_bar_rate', 100):>8}"
            f"{mean('used_pitch_classes'):>7}{mean('qualified_note_rate', 100):>7}"
            f"{mean('drum_pattern_rate', 100):>7}"
        )
    left_out = total.notes - int(view.notes.sum())
    print(
        f"(files: files where the track has notes; metrics: means over those files. "
        f"{left_out} of {total.notes} notes fall outside C1-B7, merge with a note of the "
        "same pitch and step from another part, or have a left-out program)"
    )
    if view.unreadable:
        print(f"load_midi rejected {view.unreadable} written files")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"pieces per collection, 0 = all (default {DEFAULT_LIMIT})",
    )
    parser.add_argument(
        "--collections", nargs="+", choices=(*COLLECTIONS, "all"),
        default=list(DEFAULT_COLLECTIONS), metavar="NAME",
        help=f"{', '.join(COLLECTIONS)} or all (default: {' '.join(DEFAULT_COLLECTIONS)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error(f"--limit must be 0 (all) or more, got {args.limit}")
    try:
        import music21  # noqa: F401
    except ImportError:
        print("music21 is not installed; run: pip install 'music21>=9'", file=sys.stderr)
        return 2
    collections = COLLECTIONS if "all" in args.collections else tuple(args.collections)
    tallies = run(args.out, collections, args.limit)
    return 0 if sum(t.files for t in tallies.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
