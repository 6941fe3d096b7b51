"""Rights tags inside audio files, written with ``mutagen`` without touching the audio.

One set of fields (:data:`FIELDS`) is written into the metadata container each format
has, under names other tools (FFmpeg/ffprobe, foobar2000, Mp3tag, beets, Picard) show:

============== ============================ ================= ===============================
field          ID3v2 (MP3, WAV ``id3`` chunk) Vorbis comment     MP4 (M4A)
                                            (FLAC, Ogg, Opus)
============== ============================ ================= ===============================
owner          ``TXXX:RIGHTS_OWNER``        ``RIGHTS_OWNER``  ``----:com.apple.iTunes:RIGHTS_OWNER``
copyright      ``TCOP``                     ``COPYRIGHT``     ``cprt``
licence_url    ``WCOP`` + ``TXXX:LICENSE``  ``LICENSE``       ``----:com.apple.iTunes:LICENSE``
contact        ``TXXX:CONTACT``             ``CONTACT``       ``----:com.apple.iTunes:CONTACT``
isrc           ``TSRC``                     ``ISRC``          ``----:com.apple.iTunes:ISRC``
ai_training    ``TXXX:AI_TRAINING``         ``AI_TRAINING``   ``----:com.apple.iTunes:AI_TRAINING``
tdm_reservation ``TXXX:TDM_RESERVATION``    ``TDM_RESERVATION`` ``----:...:TDM_RESERVATION``
source_sha256  ``TXXX:HARMONYCLOAK_SOURCE_SHA256`` (same name in every container)
report_sha256  ``TXXX:HARMONYCLOAK_REPORT_SHA256`` (same name in every container)
============== ============================ ================= ===============================

Sources: ID3v2.4 native frames (id3.org ``id3v2.4.0-frames``: TCOP copyright message,
WCOP copyright/legal information URL, TSRC ISRC, TXXX user-defined text); the Vorbis
comment field recommendations (xiph.org ``v-comment.html``: COPYRIGHT, LICENSE, CONTACT,
ISRC); iTunes-style MP4 atoms (``cprt``) and freeform ``----`` atoms under the
``com.apple.iTunes`` mean, as MusicBrainz Picard writes them. FFmpeg shows URL frames such
as WCOP nowhere, so the licence URL is also written as ``TXXX:LICENSE``.

``ai_training`` is ``notAllowed`` (the CAWG training-and-data-mining vocabulary) and
``tdm_reservation`` is ``1`` (W3C TDMRep: text-and-data-mining rights reserved, EU
Directive 2019/790 article 4(3)). ``source_sha256`` is the SHA-256 of the file the
tagged copy was made from and ``report_sha256`` that of its protection report: together
they let the catalog tie the tagged copy to the protection it went through, even though
the tags themselves changed the file's bytes.

Tagging never decodes or re-encodes audio: the file is copied byte for byte to a
temporary sibling, mutagen rewrites only the metadata there, and the result replaces the
output atomically (:func:`harmonycloak.io.files.atomic_write`). Tags already in the file
(title, artist, cover art) are kept; a rights field that is not given keeps its old value.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from harmonycloak.errors import InputError
from harmonycloak.io.files import atomic_write, same_file

__all__ = [
    "AI_TRAINING_NOT_ALLOWED",
    "FIELDS",
    "TAGGABLE_SUFFIXES",
    "Field",
    "RightsInfo",
    "check_url",
    "default_copyright",
    "normalize_isrc",
    "read_artist",
    "read_tags",
    "tag_file",
    "tag_format",
    "write_tags",
]

AI_TRAINING_NOT_ALLOWED = "notAllowed"
#: Suffixes whose files can carry rights tags (raw ADTS ``.aac`` has no tag container).
TAGGABLE_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".mp4")
_MP4_MEAN = "com.apple.iTunes"
_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")


@dataclass(frozen=True)
class Field:
    """Where one rights field lives in each container, and what it means."""

    id3: str  # a native frame id, or "TXXX:<description>"
    vorbis: str
    mp4: str  # an atom name, or "----:com.apple.iTunes:<name>"
    meaning: str


def _free(name: str) -> str:
    return f"----:{_MP4_MEAN}:{name}"


FIELDS: dict[str, Field] = {
    "owner": Field("TXXX:RIGHTS_OWNER", "RIGHTS_OWNER", _free("RIGHTS_OWNER"),
                   "who holds the rights in the recording"),
    "copyright": Field("TCOP", "COPYRIGHT", "cprt",
                       "copyright notice; ID3 wants it to start with the year and a space"),
    "licence_url": Field("WCOP", "LICENSE", _free("LICENSE"),
                         "web page with the licence terms (ID3: also TXXX:LICENSE for FFmpeg)"),
    "contact": Field("TXXX:CONTACT", "CONTACT", _free("CONTACT"),
                     "where to ask for a licence (URL or e-mail)"),
    "isrc": Field("TSRC", "ISRC", _free("ISRC"),
                  "International Standard Recording Code, 12 characters (ISO 3901)"),
    "ai_training": Field("TXXX:AI_TRAINING", "AI_TRAINING", _free("AI_TRAINING"),
                         "use for AI training: notAllowed (CAWG training-mining vocabulary)"),
    "tdm_reservation": Field("TXXX:TDM_RESERVATION", "TDM_RESERVATION", _free("TDM_RESERVATION"),
                             "1 = text and data mining rights reserved (W3C TDMRep, EU DSM art. 4(3))"),
    "source_sha256": Field("TXXX:HARMONYCLOAK_SOURCE_SHA256", "HARMONYCLOAK_SOURCE_SHA256",
                           _free("HARMONYCLOAK_SOURCE_SHA256"),
                           "SHA-256 of the file this copy was tagged from"),
    "report_sha256": Field("TXXX:HARMONYCLOAK_REPORT_SHA256", "HARMONYCLOAK_REPORT_SHA256",
                           _free("HARMONYCLOAK_REPORT_SHA256"),
                           "SHA-256 of the protection report of that file"),
}
_ID3_LICENCE_TEXT = "TXXX:LICENSE"  # FFmpeg ignores URL frames; this one it shows


@dataclass(frozen=True)
class RightsInfo:
    """The rights statement written into a file; None fields are left as they are.

    ``owner`` is required. ``copyright`` defaults to :func:`default_copyright`.
    ``ai_training`` and ``tdm_reservation`` carry the AI-training reservation.
    """

    owner: str
    copyright: str | None = None
    licence_url: str | None = None
    contact: str | None = None
    isrc: str | None = None
    ai_training: str | None = AI_TRAINING_NOT_ALLOWED
    tdm_reservation: str | None = "1"
    source_sha256: str | None = None
    report_sha256: str | None = None

    def fields(self) -> dict[str, str]:
        """Field name -> value for the fields to write (copyright filled in)."""
        values = asdict(self)
        if not values["copyright"]:
            values["copyright"] = default_copyright(self.owner)
        return {key: str(value) for key, value in values.items() if value not in (None, "")}


def default_copyright(owner: str, *, year: int | None = None) -> str:
    """``"2025 Owner. All rights reserved, including AI training and text and data mining."``

    Starts with the year and a space, as the ID3v2 TCOP frame requires.
    """
    year = year or _dt.date.today().year
    return f"{year} {owner}. All rights reserved, including AI training and text and data mining."


def normalize_isrc(value: str) -> str:
    """An ISRC as its 12 characters (``US-RC1-76-07839`` -> ``USRC17607839``).

    Raises :class:`InputError` when it is not CC-XXX-YY-NNNNN (2 letters, 3 letters or
    digits, 2-digit year, 5-digit number; ISO 3901).
    """
    code = re.sub(r"[\s-]", "", value).upper()
    if not _ISRC.match(code):
        raise InputError(
            f"--isrc {value!r}: not an ISRC; it has 12 characters, CC-XXX-YY-NNNNN "
            "(e.g. US-RC1-76-07839): use the code your distributor gave you"
        )
    return code


def check_url(option: str, value: str, *, allow_email: bool = False) -> str:
    """``value`` when it is an http(s) URL (or, with ``allow_email``, mailto: or an e-mail).

    Raises :class:`InputError` naming ``option`` otherwise.
    """
    text = value.strip()
    if re.match(r"^https?://[^\s/]+\S*$", text):
        return text
    if allow_email and re.match(r"^(mailto:)?[^\s@]+@[^\s@]+\.[^\s@]+$", text):
        return text
    kind = "an http(s) URL or an e-mail address" if allow_email else "an http(s) URL"
    raise InputError(f"{option} {value!r}: give {kind}, e.g. https://example.com/licence")


# ---------------------------------------------------------------------------------------
# Opening files
# ---------------------------------------------------------------------------------------


def _open(path: Path) -> tuple[Any, str]:
    """The mutagen object of ``path`` and its container kind: ``id3``, ``vorbis`` or ``mp4``."""
    import mutagen
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis
    from mutagen.wave import WAVE

    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path")
    try:
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError, ValueError) as error:
        raise InputError(
            f"{path}: cannot read its metadata ({error}); export the file again"
        ) from error
    kinds = ((MP3, "id3"), (WAVE, "id3"), (FLAC, "vorbis"), (OggVorbis, "vorbis"),
             (OggOpus, "vorbis"), (MP4, "mp4"))
    for cls, kind in kinds:
        if isinstance(audio, cls):
            return audio, kind
    what = "not a recognised audio file" if audio is None else f"{type(audio).__name__} audio"
    raise InputError(
        f"{path}: {what}; rights tags go into WAV, FLAC, MP3, Ogg Vorbis, Opus and M4A files "
        "(convert it to one of those first)"
    )


def tag_format(path: str | os.PathLike[str]) -> str:
    """The container kind of a file: ``id3``, ``vorbis`` or ``mp4``; InputError otherwise."""
    return _open(Path(path))[1]


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The rights fields present in a file, by field name (empty when there are none).

    Raises :class:`InputError` when the file cannot be parsed or cannot carry tags.
    """
    audio, kind = _open(Path(path))
    tags = audio.tags
    if tags is None:
        return {}
    reader = _READERS[kind]
    found: dict[str, str] = {}
    for name, spec in FIELDS.items():
        value = reader(tags, spec)
        if value:
            found[name] = value
    if kind == "id3" and "licence_url" not in found:
        value = _read_id3(tags, Field(_ID3_LICENCE_TEXT, "", "", ""))
        if value:
            found["licence_url"] = value
    return found


_ARTIST = Field("TPE1", "ARTIST", "\xa9ART", "the performing artist")


def read_artist(path: str | os.PathLike[str]) -> str | None:
    """The file's artist tag (ID3 ``TPE1``, Vorbis ``ARTIST``, MP4 ``\xa9ART``), stripped;
    None when the file has none or its metadata cannot be read (a file without tags
    is not an error here: the caller falls back to another label)."""
    try:
        audio, kind = _open(Path(path))
    except InputError:
        return None
    if audio.tags is None:
        return None
    value = _READERS[kind](audio.tags, _ARTIST)
    return value.strip() or None if value else None


def _read_id3(tags: Any, spec: Field) -> str | None:
    frame_id = spec.id3
    if frame_id.startswith("TXXX:"):
        wanted = frame_id[5:].upper()
        for frame in tags.getall("TXXX"):
            if frame.desc.upper() == wanted and frame.text:
                return str(frame.text[0])
        return None
    frames = tags.getall(frame_id)
    if not frames:
        return None
    if frame_id.startswith("W"):
        return str(frames[0].url) or None
    return str(frames[0].text[0]) if frames[0].text else None


def _read_vorbis(tags: Any, spec: Field) -> str | None:
    values = tags.get(spec.vorbis)  # Vorbis comment names are case-insensitive
    return str(values[0]) if values else None


def _read_mp4(tags: Any, spec: Field) -> str | None:
    values = tags.get(spec.mp4)
    if not values:
        return None
    value = values[0]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


_READERS = {"id3": _read_id3, "vorbis": _read_vorbis, "mp4": _read_mp4}
"""How each container kind (:func:`tag_format`) reads one :class:`Field`."""


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def write_tags(path: str | os.PathLike[str], info: RightsInfo) -> dict[str, str]:
    """Write ``info`` into the file at ``path`` in place (metadata only); returns the fields.

    Use :func:`tag_file` for user files: it works on a copy and replaces atomically.
    Raises :class:`InputError` when the file cannot carry tags or mutagen cannot save.
    """
    import mutagen

    file = Path(path)
    audio, kind = _open(file)
    fields = info.fields()
    # keep an existing ID3v2.4 tag at 2.4; new tags are 2.3, which every player reads
    id3_version = 4 if getattr(audio.tags, "version", (2, 3, 0))[1] == 4 else 3
    if audio.tags is None:
        audio.add_tags()
    writer = {"id3": _write_id3, "vorbis": _write_vorbis, "mp4": _write_mp4}[kind]
    writer(audio.tags, fields)
    try:
        if kind == "id3":
            audio.save(v2_version=id3_version)
        else:
            audio.save()
    except (mutagen.MutagenError, OSError) as error:
        raise InputError(f"{file}: cannot write tags ({error}); check the file and free space") from error
    return fields


def _write_id3(tags: Any, fields: dict[str, str]) -> None:
    from mutagen.id3 import TCOP, TSRC, TXXX, WCOP

    native = {"TCOP": TCOP, "TSRC": TSRC}
    for name, value in fields.items():
        frame_id = FIELDS[name].id3
        if frame_id.startswith("TXXX:"):
            _set_txxx(tags, frame_id[5:], value, TXXX)
        elif frame_id == "WCOP":
            tags.setall("WCOP", [WCOP(url=value)])
            _set_txxx(tags, _ID3_LICENCE_TEXT[5:], value, TXXX)
        else:
            tags.setall(frame_id, [native[frame_id](encoding=3, text=[value])])


def _set_txxx(tags: Any, desc: str, value: str, txxx: Any) -> None:
    for frame in list(tags.getall("TXXX")):
        if frame.desc.upper() == desc.upper():
            tags.delall(frame.HashKey)
    tags.add(txxx(encoding=3, desc=desc, text=[value]))


def _write_vorbis(tags: Any, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        tags[FIELDS[name].vorbis] = [value]


def _write_mp4(tags: Any, fields: dict[str, str]) -> None:
    from mutagen.mp4 import AtomDataType, MP4FreeForm

    for name, value in fields.items():
        atom = FIELDS[name].mp4
        if atom.startswith("----:"):
            tags[atom] = [MP4FreeForm(value.encode("utf-8"), dataformat=AtomDataType.UTF8)]
        else:
            tags[atom] = [value]


def tag_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    info: RightsInfo,
    *,
    force: bool = False,
    after: Callable[[Path], None] | None = None,
) -> tuple[Path, dict[str, str]]:
    """Write ``info`` into a copy of ``source`` at ``output`` (None: replace ``source``).

    The audio bytes are copied unchanged; only the metadata is rewritten, in a temporary
    sibling of the output, which then replaces the output atomically. ``after(tmp)`` runs
    on the tagged temporary file before the rename (C2PA signing goes there, because a
    signature must cover the final bytes). ``output`` must keep the source's suffix: the
    format cannot change without re-encoding. Returns the written path and the fields.

    Raises :class:`InputError` for a missing or untaggable source, a suffix change, an
    existing output without ``force``, or an output that is the source (pass None).
    """
    src = Path(source)
    _open(src)  # fail before creating anything
    in_place = output is None
    target = src if output is None else Path(output)
    if not in_place and same_file(src, target):
        raise InputError(f"{target}: is the input; use --in-place to tag the file itself")
    if target.suffix.lower() != src.suffix.lower():
        raise InputError(
            f"{target}: must end in {src.suffix} like the input: tagging copies the audio "
            "without re-encoding, so the format stays the same"
        )
    written: dict[str, str] = {}

    def writer(tmp: Path) -> None:
        shutil.copyfile(src, tmp)
        written.update(write_tags(tmp, info))
        if after is not None:
            after(tmp)

    path = atomic_write(target, writer, force=force or in_place, inputs=() if in_place else (src,))
    return path, written
