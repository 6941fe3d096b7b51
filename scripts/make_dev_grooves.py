"""Render Debian mma's groove libraries over chord progressions: the multi-track dev corpus.

    bash scripts/get_dev_grooves.sh                      # installs mma, then runs this
    python scripts/make_dev_grooves.py                   # default set -> data/dev-grooves/
    python scripts/make_dev_grooves.py --limit 2 --out /tmp/grooves --libraries stdlib

mma ("Musical MIDI Accompaniment", Debian package ``mma``) turns a chord chart into a
full band arrangement in the style of a *groove*: drums, bass, guitar, piano, strings,
organ, horns ... as the groove has them, with the groove's own accents, random velocity
(``RVolume``) and timing (``RTime``) variation. Its ~300 library files each define one
style and its variants (``DefGroove 50sRock``, ``50sRockSus``, ``50sRockPlus``, ...).
This is the nearest thing here to the Lakh MIDI set the paper trained on: multi-track,
pop-style, with performed (varied) velocities, and labelled by genre.

For every library file of ``--libraries`` (default: stdlib casio yamaha kara pflib
alexis; ``zoom`` is drum-machine patterns only, and ``metronome*``/``none`` are not
music) it takes ``--grooves-per-file`` grooves (the file's first playable groove plus
others drawn at random; intros, endings, fills and breaks are left out), and renders
each over ``--progressions`` chord progressions suited to the genre (below), each
``--takes`` times, ``--bars`` bars long (the progression repeats), in a random key at a
random tempo from the genre's range. Everything random comes from one number per file,
a hash of ``--seed``, the groove, the progression and the take, and mma's own random
generator is seeded with it (``RndSeed``), so a file does not change when other files
are added or left out, and the same command gives the same bytes.

Output: ``OUT/<genre>/<groove>-<progression>-<take>.mid`` and ``OUT/labels.csv`` (one
row per file written by this run: path, genre, library, library file, groove,
progression, key, tempo, bars, seed). ``<groove>`` is the groove name in lower case
with anything but letters and digits as ``_``, prefixed with its library for every
library but stdlib (``casio_8beatpop1``), so names never clash. Files are overwritten.

Genres, from the library file's name (the first rule that matches wins; the rule and
its order are in ``GENRE_RULES``; ``genre_of`` applies them):

============  =================================================================
ballad        ballad, lullaby, serenade, ambient, arpeggio (piano arpeggios)
latin         bossa, samba, salsa, mambo, rhumba, cha-cha, bolero, beguine, tango,
              merengue, son, afro-cuban, calypso, cuban, latin, ska, quando (samba)
blues         blues, boogie
country       country, bluegrass, western, zydeco, folk (bluefolk, folkrock)
jazz          jazz, bebop, swing, big band, dixie, ragtime, charleston, fusion,
              foxtrot, quickstep, jive, broadway, show tune, soft shoe, desert
              ("Caravan"), evansish
rnb           soul, funk, r&b (rb, r+b), motown, hip-hop, trip-hop
dance         dance, disco, techno, trance, house, rave, boneym (disco)
rock          rock, metal, punk, twist, strut, highfive
traditional   march, waltz, polka, hymn, spiritual
pop           pop, 8beat, 16beat, shuffle, 2beat (everything left)
============  =================================================================

So "rockballad" is a ballad, "latinwaltz" latin, "jazzwaltz" jazz, "countryswing"
country, "popwaltz" traditional, "8beatmotown" rnb. ``folkyjazz`` and ``jazzcountry``
are named exceptions (jazz, country).

At the end it prints the files per genre, the time taken, the histogram of note-on
velocities (mma varies them: the point of this corpus), and how
``harmonycloak.io.midi.load_midi(..., grouping="musegan")`` sees the files: notes and
distinct velocities per MuseGAN track (Bass, Drums, Guitar, Piano, Strings).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "dev-grooves"
DEFAULT_LIBRARIES = ("stdlib", "casio", "yamaha", "kara", "pflib", "alexis")
LIB_DIRS = (Path("/usr/share/mma/lib"), Path("/usr/local/share/mma/lib"))
EXCLUDED_FILES = frozenset({"metronome", "metronome3", "metronome6", "metronome68", "none"})
DEFAULT_GROOVES_PER_FILE = 2
DEFAULT_PROGRESSIONS = 3
DEFAULT_TAKES = 1
DEFAULT_BARS = 16

GENRES = ("ballad", "latin", "blues", "country", "jazz", "rnb", "dance", "rock",
          "traditional", "pop")  # fmt: skip
GENRE_EXCEPTIONS = {"folkyjazz": "jazz", "jazzcountry": "country"}
GENRE_RULES: tuple[tuple[str, str], ...] = (
    ("ballad", r"ballad|lullaby|serenade|ambient|arpeggio"),
    ("latin", r"bossa|samba|salsa|mambo|rhumba|rumba|chacha|bolero|beguine|tango|merengue"
              r"|^son$|afro|calypso|cuban|latin|lfusion|ska|quando"),
    ("blues", r"blues|boogie|boggie"),
    ("country", r"country|bluegrass|western|zydeco|folk"),
    ("jazz", r"jazz|bebop|swing|bigband|dixie|ragtime|charleston|fusion|foxtrot|quickstep"
             r"|jive|broadway|showtune|softshoe|desert|evansish"),
    ("rnb", r"soul|funk|^rb$|mellowrb|modernrb|r\+b|motown|hip-?hop|triphop"),
    ("dance", r"dance|disco|techno|trance|house|rave|boneym"),
    ("rock", r"rock|metal|punk|twist|^twi$|strut|highfive"),
    ("traditional", r"march|waltz|polka|hymn|spiritual"),
    ("pop", r"pop|8beat|16beat|shuffle|2beat"),
)  # fmt: skip
"""(genre, regular expression on the lower-case library file name), first match wins."""

TEMPO_RANGE_QPM = {
    "ballad": (60, 84), "latin": (90, 140), "blues": (70, 130), "country": (90, 150),
    "jazz": (100, 200), "rnb": (80, 115), "dance": (115, 135), "rock": (100, 160),
    "traditional": (90, 150), "pop": (90, 130),
}  # fmt: skip
"""Tempo drawn uniformly (whole quarter notes per minute) per genre."""

PROGRESSIONS: dict[str, tuple[str, ...]] = {
    "axis": ("I", "V", "vi", "IV"),
    "doowop": ("I", "vi", "IV", "V"),
    "pachelbel": ("I", "V", "vi", "iii", "IV", "I", "IV", "V"),
    "mixolydian": ("I", "bVII", "IV", "I"),
    "minorpop": ("i", "bVI", "bIII", "bVII"),
    "andalusian": ("i", "bVII", "bVI", "V7"),
    "threechord": ("I", "IV", "I", "V"),
    "blues12": ("I7", "IV7", "I7", "I7", "IV7", "IV7", "I7", "I7", "V7", "IV7", "I7", "V7"),
    "iivi": ("ii7", "V7", "Imaj7", "Imaj7"),
    "turnaround": ("Imaj7", "vi7", "ii7", "V7"),
    "minoriivi": ("iim7b5", "V7", "i", "i"),
    "rhythm": ("Imaj7", "vi7", "ii7", "V7", "iii7", "vi7", "ii7", "V7"),
}
"""Chord progressions in Roman numerals, one chord per bar, repeated to fill the piece.
Upper case is major, lower case minor; ``b`` lowers the root a semitone; ``7`` is a
dominant seventh on a major numeral and a minor seventh on a minor one."""

COMMON_PROGRESSIONS = ("axis", "doowop", "pachelbel", "threechord", "minorpop")
GENRE_PROGRESSIONS = {
    "ballad": COMMON_PROGRESSIONS + ("turnaround",),
    "latin": ("axis", "minorpop", "andalusian", "iivi", "minoriivi", "turnaround"),
    "blues": ("blues12", "threechord", "mixolydian"),
    "country": ("threechord", "axis", "doowop", "mixolydian", "blues12"),
    "jazz": ("iivi", "turnaround", "rhythm", "minoriivi", "blues12"),
    "rnb": ("minorpop", "axis", "iivi", "mixolydian", "turnaround"),
    "dance": ("axis", "minorpop", "andalusian", "mixolydian"),
    "rock": ("mixolydian", "threechord", "axis", "minorpop", "blues12", "andalusian"),
    "traditional": ("threechord", "doowop", "pachelbel", "axis"),
    "pop": COMMON_PROGRESSIONS + ("mixolydian",),
}
"""Which progressions each genre's grooves are rendered over (drawn without repeats)."""

KEY_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
_DEGREES = {"i": 0, "ii": 2, "iii": 4, "iv": 5, "v": 7, "vi": 9, "vii": 11}
_NUMERAL = re.compile(r"^(b?)(VII|VI|V|IV|III|II|I|vii|vi|v|iv|iii|ii|i)(maj7|m7b5|7|dim)?$")
_NOT_PLAYABLE = re.compile(r"intro|end|fill|break|metronome", re.IGNORECASE)
_PFLIB_SECTION = re.compile(r"(?<=[a-z0-9])(E|F[AB])$")  # pflib's 16beat1E, 16beat1FA
_DEFGROOVE = re.compile(r"^\s*defgroove\s+(\S+)", re.IGNORECASE | re.MULTILINE)
LABEL_FIELDS = ("path", "genre", "library", "library_file", "groove", "progression", "key",
                "tempo_qpm", "bars", "take", "seed")  # fmt: skip


# ----------------------------------------------------------------------- pure parts


def genre_of(library_file: str) -> str | None:
    """The genre of an mma library file (its name without ``.mma``), or None."""
    name = library_file.lower()
    if name in GENRE_EXCEPTIONS:
        return GENRE_EXCEPTIONS[name]
    for genre, pattern in GENRE_RULES:
        if re.search(pattern, name):
            return genre
    return None


def groove_names(text: str) -> list[str]:
    """The grooves a library file defines (``DefGroove NAME``), in file order, once each."""
    return list(dict.fromkeys(_DEFGROOVE.findall(text)))


def is_playable(groove: str) -> bool:
    """False for intros, endings, fills, breaks and metronome variants."""
    return not (_NOT_PLAYABLE.search(groove) or _PFLIB_SECTION.search(groove))


def chord_symbol(numeral: str, key: int) -> str:
    """mma chord name of a Roman numeral in the key with tonic pitch class ``key``.

    >>> chord_symbol("vi", 0), chord_symbol("bVII", 9), chord_symbol("ii7", 3)
    ('Am', 'G', 'Fm7')
    """
    match = _NUMERAL.match(numeral)
    if match is None:
        raise ValueError(f"not a Roman numeral chord: {numeral!r}")
    flat, degree, suffix = match.groups()
    root = KEY_NAMES[(key + _DEGREES[degree.lower()] - (1 if flat else 0)) % 12]
    minor = degree.islower()
    if suffix == "7":
        return root + ("m7" if minor else "7")
    if suffix in ("maj7", "m7b5", "dim"):
        return root + suffix
    return root + ("m" if minor else "")


def progression_chords(name: str, key: int, bars: int) -> list[str]:
    """One mma chord per bar: progression ``name`` in ``key``, repeated to ``bars``."""
    numerals = PROGRESSIONS[name]
    return [chord_symbol(numerals[i % len(numerals)], key) for i in range(bars)]


def slug(name: str) -> str:
    """File-name form of a groove or library name: lower case, ``_`` for the rest."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Groove:
    """One playable groove of one library file."""

    library: str  # folder under mma's lib, e.g. "casio"
    library_file: str  # file name without .mma, e.g. "8beatpop1"
    name: str  # as DefGroove spells it, e.g. "8BeatPop1"
    genre: str

    @property
    def file_stem(self) -> str:
        """``<groove>`` part of the output name (library-prefixed outside stdlib)."""
        base = slug(self.name)
        return base if self.library == "stdlib" else f"{slug(self.library)}_{base}"

    @property
    def reference(self) -> str:
        """mma's extended groove name ``library/file:GROOVE`` (no ambiguity across libs)."""
        return f"{self.library}/{self.library_file}:{self.name}"


@dataclass(frozen=True)
class Job:
    """One file to render: groove, progression, take, and what was drawn for it."""

    groove: Groove
    progression: str
    take: int
    key: int
    tempo_qpm: int
    bars: int
    seed: int

    @property
    def relative_path(self) -> str:
        return f"{self.groove.genre}/{self.groove.file_stem}-{self.progression}-{self.take}.mid"

    def label(self) -> dict[str, object]:
        return {"path": self.relative_path, "genre": self.groove.genre,
                "library": self.groove.library, "library_file": self.groove.library_file,
                "groove": self.groove.name, "progression": self.progression,
                "key": KEY_NAMES[self.key], "tempo_qpm": self.tempo_qpm, "bars": self.bars,
                "take": self.take, "seed": self.seed}  # fmt: skip


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from ``parts`` that does not depend on Python's hash salt."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


def discover(lib_dir: Path, libraries: Iterable[str], *,
             limit: int = 0) -> tuple[list[list[Groove]], Counter]:
    """Playable grooves per library file (files in sorted order, grooves in file order).

    Returns the groove lists (one per usable file) and a count of what was skipped.
    ``limit`` keeps the first N usable files of each library (0 = all).
    """
    files: list[list[Groove]] = []
    skipped: Counter = Counter()
    for library in libraries:
        folder = lib_dir / library
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such mma library folder")
        kept = 0
        for path in sorted(folder.glob("*.mma")):
            if limit and kept >= limit:
                break
            if path.stem.lower() in EXCLUDED_FILES:
                skipped["not music (metronome/none)"] += 1
                continue
            genre = genre_of(path.stem)
            if genre is None:
                skipped["no genre rule"] += 1
                continue
            names = [n for n in groove_names(path.read_text(errors="replace")) if is_playable(n)]
            if not names:
                skipped["no playable groove"] += 1
                continue
            files.append([Groove(library, path.stem, n, genre) for n in names])
            kept += 1
    return files, skipped


def plan(files: list[list[Groove]], *, grooves_per_file: int, progressions: int, takes: int,
         bars: int, seed: int) -> list[Job]:
    """The files to render, each with its own seed, key and tempo (see the module doc)."""
    jobs = []
    for grooves in files:
        first = grooves[0]
        rng = np.random.default_rng(stable_seed(seed, first.library, first.library_file))
        others = list(rng.permutation(len(grooves) - 1)[: max(0, grooves_per_file - 1)] + 1)
        for groove in [first] + [grooves[i] for i in sorted(others)]:
            pool = GENRE_PROGRESSIONS[groove.genre]
            rng = np.random.default_rng(stable_seed(seed, groove.reference))
            chosen = [pool[i] for i in rng.permutation(len(pool))[:progressions]]
            for progression in chosen:
                for take in range(1, takes + 1):
                    job_seed = stable_seed(seed, groove.reference, progression, take)
                    draw = np.random.default_rng(job_seed)
                    low, high = TEMPO_RANGE_QPM[groove.genre]
                    jobs.append(Job(groove, progression, take, key=int(draw.integers(12)),
                                    tempo_qpm=int(draw.integers(low, high + 1)), bars=bars,
                                    seed=job_seed))
    return jobs


def mma_source(job: Job) -> str:
    """The mma song file for ``job``: tempo, seeded randomness, the groove, the chords."""
    chords = progression_chords(job.progression, job.key, job.bars)
    lines = [
        f"// {job.relative_path}: written by harmonycloak scripts/make_dev_grooves.py",
        f"Tempo {job.tempo_qpm}",
        f"RndSeed {job.seed}",
        f"Groove {job.groove.reference}",
        *(f"{bar} {chord}" for bar, chord in enumerate(chords, start=1)),
    ]
    return "\n".join(lines) + "\n"


def write_labels(path: Path, labels: list[dict[str, object]]) -> None:
    """``labels.csv`` sorted by path, written atomically (temporary file, rename)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LABEL_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(labels, key=lambda row: str(row["path"])))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- render


class RenderError(RuntimeError):
    """mma failed on one song; the message is mma's own."""


def render_with_mma(source: str, out: Path, *, mma: str, workdir: Path) -> None:
    """Run mma on ``source`` and move the MIDI file it writes to ``out``."""
    song = workdir / "song.mma"
    song.write_text(source, encoding="utf-8")
    midi = workdir / "song.mid"
    midi.unlink(missing_ok=True)
    done = subprocess.run(
        [mma, "-w", "-xNOCREDIT", "-f", str(midi), str(song)], cwd=workdir, capture_output=True,
        text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not midi.exists():
        message = " ".join(line for line in (done.stdout + done.stderr).splitlines()
                           if "PLUGIN" not in line)  # fmt: skip
        raise RenderError(message.strip()[:200] or f"mma exited with {done.returncode}")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(midi), str(out))


# ---------------------------------------------------------------------------- stats


@dataclass
class Stats:
    """What the written files hold."""

    genres: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    velocities: np.ndarray = field(default_factory=lambda: np.zeros(128, np.int64))
    track_notes: np.ndarray = field(default_factory=lambda: np.zeros(5, np.int64))
    track_files: np.ndarray = field(default_factory=lambda: np.zeros(5, np.int64))
    track_velocities: list[set] = field(default_factory=lambda: [set() for _ in range(5)])
    tracks_per_file: Counter = field(default_factory=Counter)
    unreadable: int = 0

    def add(self, path: Path) -> None:
        """Count one written file's note-on velocities and its MuseGAN view."""
        from symusic import Score

        from harmonycloak.errors import InputError
        from harmonycloak.io.midi import load_midi

        for track in Score(str(path)).tracks:
            velocity = track.notes.numpy()["velocity"] if track.note_num() else []
            np.add.at(self.velocities, np.asarray(velocity, dtype=np.int64), 1)
        try:
            roll = load_midi(path, grouping="musegan")
        except InputError:
            self.unreadable += 1
            return
        notes = roll.onsets.sum(axis=(1, 2))
        self.track_notes += notes
        self.track_files += notes > 0
        self.tracks_per_file[int((notes > 0).sum())] += 1
        for index in range(5):
            values = roll.velocities[index][roll.onsets[index]]
            self.track_velocities[index].update(np.round(values * 127).astype(int).tolist())


def velocity_histogram(counts: np.ndarray, *, bin_width: int = 8) -> list[tuple[int, int, int]]:
    """``(first, last, notes)`` per bin of ``bin_width`` MIDI velocities from 1 to 127."""
    return [(low, min(low + bin_width - 1, 127), int(counts[low: low + bin_width].sum()))
            for low in range(1, 128, bin_width)]  # fmt: skip


def _summary(out: Path, stats: Stats, jobs: int, seconds: float, skipped: Counter) -> None:
    from harmonycloak.io.midi import MUSEGAN_TRACKS

    total = sum(stats.genres.values())
    print(f"\nMIDI files in {out}: {total} of {jobs} rendered in {seconds:.0f} s")
    for genre in GENRES:
        if stats.genres[genre]:
            print(f"  {genre:<12}{stats.genres[genre]:>6}")
    for reason, count in skipped.items():
        print(f"  library files skipped: {count} x {reason}")
    for reason, count in stats.failed.most_common(5):
        print(f"  mma failed: {count} x {reason}")
    counts = stats.velocities
    notes = int(counts.sum())
    if notes:
        distinct = int((counts > 0).sum())
        mode = int(counts.argmax())
        mean = float((np.arange(128) * counts).sum() / notes)
        std = float(np.sqrt(((np.arange(128) - mean) ** 2 * counts).sum() / notes))
        print(f"\nNote-on velocities: {notes} notes, {distinct} distinct values, mean {mean:.1f},"
              f" sd {std:.1f}, most common {mode} ({counts[mode] / notes:.1%} of notes)")
        bins = velocity_histogram(counts)
        largest = max(n for _, _, n in bins)
        for low, high, n in bins:
            bar = "#" * round(50 * n / largest)
            print(f"  {low:>3}-{high:<3} {n:>8} {n / notes:6.1%} {bar}")
    print("\nAs MuseGAN's five tracks (load_midi grouping='musegan'):")
    print(f"{'track':<10}{'files':>7}{'notes':>10}{'velocities':>12}")
    for index, track in enumerate(MUSEGAN_TRACKS):
        print(f"{track:<10}{int(stats.track_files[index]):>7}{int(stats.track_notes[index]):>10}"
              f"{len(stats.track_velocities[index]):>12}")
    spread = ", ".join(f"{k}: {v}" for k, v in sorted(stats.tracks_per_file.items()))
    print(f"files by number of non-empty tracks: {spread}")
    if stats.unreadable:
        print(f"load_midi rejected {stats.unreadable} written files")


# ----------------------------------------------------------------------------- main

Renderer = Callable[[str, Path, Path], None]  # (mma source, output file, work folder)


def run(out: Path, jobs: list[Job], render: Renderer, *, skipped: Counter | None = None) -> Stats:
    """Render ``jobs`` into ``out``, write ``labels.csv``, print the summary."""
    stats = Stats()
    labels = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mma-") as work:
        for done, job in enumerate(jobs, start=1):
            target = out / job.relative_path
            try:
                render(mma_source(job), target, Path(work))
            except (RenderError, subprocess.TimeoutExpired) as exc:
                stats.failed[f"{job.groove.reference}: {str(exc)[:80]}"] += 1
                continue
            stats.genres[job.groove.genre] += 1
            stats.add(target)
            labels.append(job.label())
            if done % 100 == 0:
                print(f"  {done}/{len(jobs)} files, {sum(stats.failed.values())} failed",
                      flush=True)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_labels(out / "labels.csv", labels)
    _summary(out, stats, len(jobs), time.perf_counter() - started, skipped or Counter())
    return stats


def find_lib_dir() -> Path | None:
    """mma's library folder (Debian: /usr/share/mma/lib), or None."""
    return next((d for d in LIB_DIRS if d.is_dir()), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--libraries", nargs="+", default=list(DEFAULT_LIBRARIES), metavar="LIB",
                        help=f"mma library folders (default: {' '.join(DEFAULT_LIBRARIES)})")
    parser.add_argument("--limit", type=int, default=0,
                        help="library files per library, 0 = all (default 0)")
    parser.add_argument("--grooves-per-file", type=int, default=DEFAULT_GROOVES_PER_FILE)
    parser.add_argument("--progressions", type=int, default=DEFAULT_PROGRESSIONS,
                        help="progressions per groove")
    parser.add_argument("--takes", type=int, default=DEFAULT_TAKES,
                        help="renderings per groove and progression (other key, tempo, seed)")
    parser.add_argument("--bars", type=int, default=DEFAULT_BARS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lib-dir", type=Path, default=None,
                        help="mma's library folder (default: found under /usr/share/mma)")
    parser.add_argument("--mma", default="mma", help="the mma program (default: mma on PATH)")
    args = parser.parse_args(argv)
    for option in ("limit", "grooves_per_file", "progressions", "takes", "bars"):
        least = 0 if option == "limit" else 1
        if getattr(args, option) < least:
            parser.error(f"--{option.replace('_', '-')} must be at least {least}, "
                         f"got {getattr(args, option)}")
    mma = shutil.which(args.mma)
    lib_dir = args.lib_dir or find_lib_dir()
    if mma is None or lib_dir is None:
        print("mma is not installed; run: bash scripts/get_dev_grooves.sh "
              "(or apt-get install mma)", file=sys.stderr)
        return 2
    try:
        files, skipped = discover(lib_dir, args.libraries, limit=args.limit)
    except FileNotFoundError as exc:
        print(f"error: {exc}; libraries there: "
              f"{' '.join(sorted(p.name for p in lib_dir.iterdir() if p.is_dir()))}",
              file=sys.stderr)
        return 2
    jobs = plan(files, grooves_per_file=args.grooves_per_file, progressions=args.progressions,
                takes=args.takes, bars=args.bars, seed=args.seed)
    print(f"{len(files)} library files, {len(jobs)} songs to render into {args.out}", flush=True)

    def render(source: str, out: Path, work: Path) -> None:
        render_with_mma(source, out, mma=mma, workdir=work)

    stats = run(args.out, jobs, render, skipped=skipped)
    return 0 if sum(stats.genres.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
