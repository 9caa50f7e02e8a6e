"""What an uploaded file really is: a sniff of its first bytes, checked against what the client declared.

Owns the upload content-type policy (docs/api.md, "Attachments"):

- :func:`sniff` looks at the first :data:`SNIFF_BYTES` bytes (magic numbers,
  then the WHATWG MIME-sniffing rules for HTML and for text versus binary)
  and names a *kind*: ``png``, ``pdf``, ``zip``, ``html``, ``text``,
  ``binary`` (no signature we know), ``empty`` ...
- :func:`checked_type` normalizes the declared type (lowercase, parameters
  dropped, aliases folded: ``image/jpg`` -> ``image/jpeg``) and checks it
  against the kind. Every type we know has an expectation: a *signature*
  type (``image/png``, ``application/pdf``, ``application/zip`` and the zip
  based office formats ...) needs its magic number; a *text* or *markup* type
  (``text/plain``, ``application/json``, ``text/html``, ``image/svg+xml`` ...)
  needs text, not a binary signature; a *media* type we cannot sniff
  reliably (``audio/aac`` ...) refuses only markup and other known
  signatures. A mismatch raises :class:`ContentTypeMismatch` (415, code
  ``content_type_mismatch``): a PNG declared as ``text/html``, an HTML or
  script body declared as ``image/png``.
- Within binary images, and within audio/video, a wrong label is corrected
  instead of refused (a PNG uploaded as ``photo.jpg`` is recorded as
  ``image/png``): browsers label files by their extension.
- A missing, malformed or unknown declared type is recorded as
  ``application/octet-stream`` (and so is ``application/octet-stream``
  itself): nothing is refused for it, and the download serves it as opaque
  bytes.

Pure: no I/O, no clock. Downloads are always ``Content-Disposition:
attachment`` with ``X-Content-Type-Options: nosniff``, so the recorded type is
never a way to make a browser render an upload as a page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from collab.errors import UnsupportedMediaType

#: How many leading bytes the sniff needs (tar's "ustar" sits at offset 257).
SNIFF_BYTES = 512
OCTET_STREAM = "application/octet-stream"
MAX_TYPE_CHARS = 100  # task_attachments.mime_type is at most 100 characters


class ContentTypeMismatch(UnsupportedMediaType):
    """The file's first bytes contradict the content type the client declared."""

    code = "content_type_mismatch"
    title = "The file's content does not match its declared content type"


# --- the sniff ----------------------------------------------------------------------------

#: (kind, offset, magic) checked in order; the first match wins.
_SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("png", 0, b"\x89PNG\r\n\x1a\n"),
    ("jpeg", 0, b"\xff\xd8\xff"),
    ("gif", 0, b"GIF87a"),
    ("gif", 0, b"GIF89a"),
    ("bmp", 0, b"BM"),
    ("ico", 0, b"\x00\x00\x01\x00"),
    ("ico", 0, b"\x00\x00\x02\x00"),
    ("tiff", 0, b"II*\x00"),
    ("tiff", 0, b"MM\x00*"),
    ("pdf", 0, b"%PDF-"),
    ("postscript", 0, b"%!PS-Adobe-"),
    ("zip", 0, b"PK\x03\x04"),
    ("zip", 0, b"PK\x05\x06"),  # empty archive
    ("gzip", 0, b"\x1f\x8b\x08"),
    ("bzip2", 0, b"BZh"),
    ("xz", 0, b"\xfd7zXZ\x00"),
    ("zstd", 0, b"\x28\xb5\x2f\xfd"),
    ("7z", 0, b"7z\xbc\xaf\x27\x1c"),
    ("rar", 0, b"Rar!\x1a\x07"),
    ("ole", 0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),  # legacy MS Office
    ("rtf", 0, b"{\\rtf"),
    ("ogg", 0, b"OggS\x00"),
    ("flac", 0, b"fLaC"),
    ("mp3", 0, b"ID3"),
    ("ebml", 0, b"\x1a\x45\xdf\xa3"),  # WebM / Matroska
    ("wasm", 0, b"\x00asm"),
    ("woff", 0, b"wOFF"),
    ("woff2", 0, b"wOF2"),
    ("otf", 0, b"OTTO"),
    ("ttf", 0, b"\x00\x01\x00\x00\x00"),
    ("iso_bmff", 4, b"ftyp"),  # MP4, QuickTime, M4A, AVIF, HEIC
    ("tar", 257, b"ustar"),
)
_RIFF = {b"WEBP": "webp", b"WAVE": "wav", b"AVI ": "avi"}

#: WHATWG "binary data bytes": their presence means "not text".
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")
_WHITESPACE = b"\t\n\x0c\r "
#: WHATWG: an HTML document starts (after whitespace) with one of these,
#: case-insensitively, followed by a space or ">".
_HTML_OPENERS = tuple(o.encode() for o in (
    "<!doctype html", "<html", "<head", "<script", "<iframe", "<h1", "<div", "<font", "<table", "<a",
    "<style", "<title", "<b", "<body", "<br", "<p", "<!--",
))
_UTF_BOMS = (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")

#: The kinds that are text (anything else is a binary kind).
TEXT_KINDS = frozenset({"text", "html", "xml", "svg", "rtf", "postscript", "empty"})


def _mp3_frame(head: bytes) -> bool:
    """An MPEG audio frame header without an ID3 tag: 11 sync bits, a valid layer and bitrate."""
    return (
        len(head) >= 4 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0
        and (head[1] >> 1) & 0x03 != 0 and (head[2] >> 4) not in (0x0, 0xF)
    )


def sniff(head: bytes) -> str:
    """The kind of content whose first bytes are ``head`` (at most :data:`SNIFF_BYTES` are looked at)."""
    head = head[:SNIFF_BYTES]
    if not head:
        return "empty"
    for kind, offset, magic in _SIGNATURES:
        if head.startswith(magic, offset):
            return kind
    if head.startswith(b"RIFF") and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    text = head
    for bom in _UTF_BOMS:
        if text.startswith(bom):
            if bom != _UTF_BOMS[0]:
                return "text"  # UTF-16: text, not inspected further
            text = text[len(bom):]
            break
    else:
        if _mp3_frame(head):  # after the BOMs: FF FE also looks like a frame header
            return "mp3"
    stripped = text.lstrip(_WHITESPACE).lower()
    for opener in _HTML_OPENERS:
        if stripped.startswith(opener) and stripped[len(opener):len(opener) + 1] in (b" ", b">"):
            return "html"
    if _BINARY_BYTES.search(text):
        return "binary"
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<svg"):
        return "svg" if b"<svg" in stripped else "xml"
    return "text"


# --- what each declared type expects --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Expect:
    """What a declared type requires: the content must sniff as one of ``kinds``
    (an empty set: anything goes)."""

    kinds: frozenset[str]


def _signature(*kinds: str) -> Expect:
    return Expect(frozenset(kinds))


_TEXT = Expect(TEXT_KINDS)
#: Binary media we cannot sniff reliably: refuse only markup and other known signatures.
_MEDIA = Expect(frozenset({"binary", "text", "empty"}))
_ANY = Expect(frozenset())

_ALIASES = {
    "image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp", "image/vnd.microsoft.icon": "image/x-icon",
    "application/x-zip-compressed": "application/zip", "application/x-gzip": "application/gzip",
    "application/x-rar-compressed": "application/vnd.rar", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav",
    "application/x-pdf": "application/pdf", "text/x-markdown": "text/markdown",
    "application/x-yaml": "application/yaml",
    "text/yaml": "application/yaml", "application/javascript": "text/javascript", "audio/mp3": "audio/mpeg",
    "application/x-javascript": "text/javascript", "audio/x-flac": "audio/flac", "text/xml": "application/xml",
}

_OFFICE_ZIP = (
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "application/epub+zip",
    "application/java-archive",
    "application/vnd.android.package-archive",
)

KNOWN_TYPES: dict[str, Expect] = {
    "application/octet-stream": _ANY,
    # images
    "image/png": _signature("png"),
    "image/jpeg": _signature("jpeg"),
    "image/gif": _signature("gif"),
    "image/webp": _signature("webp"),
    "image/bmp": _signature("bmp"),
    "image/x-icon": _signature("ico", "png"),
    "image/tiff": _signature("tiff"),
    "image/avif": _signature("iso_bmff"),
    "image/heic": _signature("iso_bmff"),
    "image/svg+xml": Expect(frozenset({"svg", "xml", "text"})),
    # documents and archives
    "application/pdf": _signature("pdf"),
    "application/postscript": _signature("postscript"),
    "application/rtf": _signature("rtf"),
    "text/rtf": _signature("rtf"),
    "application/zip": _signature("zip"),
    **{t: _signature("zip") for t in _OFFICE_ZIP},
    # Browsers label by extension: .csv is often application/vnd.ms-excel (Windows), and .doc/.xls
    # files are often RTF, CSV or the zip-based formats in disguise. None of that is active content.
    "application/msword": _signature("ole", "zip", "rtf"),
    "application/vnd.ms-excel": _signature("ole", "zip", "text"),
    "application/vnd.ms-powerpoint": _signature("ole", "zip"),
    "application/gzip": _signature("gzip"),
    "application/x-bzip2": _signature("bzip2"),
    "application/x-xz": _signature("xz"),
    "application/zstd": _signature("zstd"),
    "application/x-7z-compressed": _signature("7z"),
    "application/vnd.rar": _signature("rar"),
    "application/x-tar": _signature("tar"),
    "application/wasm": _signature("wasm"),
    # fonts
    "font/woff": _signature("woff"),
    "font/woff2": _signature("woff2"),
    "font/otf": _signature("otf"),
    "font/ttf": _signature("ttf"),
    # audio and video
    "audio/mpeg": _signature("mp3"),
    "audio/ogg": _signature("ogg"),
    "video/ogg": _signature("ogg"),
    "application/ogg": _signature("ogg"),
    "audio/flac": _signature("flac"),
    "audio/wav": _signature("wav"),
    "video/x-msvideo": _signature("avi"),
    "video/mp4": _signature("iso_bmff"),
    "audio/mp4": _signature("iso_bmff"),
    "audio/x-m4a": _signature("iso_bmff"),
    "video/quicktime": _signature("iso_bmff"),
    "video/webm": _signature("ebml"),
    "audio/webm": _signature("ebml"),
    "video/x-matroska": _signature("ebml"),
    "audio/aac": _MEDIA,
    "video/mpeg": _MEDIA,
    "audio/midi": _MEDIA,
    # text and markup
    **{t: _TEXT for t in (
        "text/plain", "text/csv", "text/tab-separated-values", "text/markdown", "text/calendar", "text/vcard",
        "text/css", "text/javascript", "application/json", "application/x-ndjson", "application/yaml",
        "application/sql", "text/x-python", "application/x-sh", "text/x-log", "text/html",
        "application/xhtml+xml", "application/xml",
    )},
}

_TYPE_SYNTAX = re.compile(r"^[a-z0-9!#$&^_.+-]{1,63}/[a-z0-9!#$&^_.+-]{1,63}$")
_EXAMPLE_TYPE = {
    "png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp", "bmp": "image/bmp",
    "ico": "image/x-icon", "tiff": "image/tiff", "pdf": "application/pdf", "postscript": "application/postscript",
    "zip": "application/zip", "gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
    "zstd": "application/zstd", "7z": "application/x-7z-compressed", "rar": "application/vnd.rar",
    "ole": "application/msword", "rtf": "application/rtf", "ogg": "audio/ogg", "flac": "audio/flac",
    "mp3": "audio/mpeg", "ebml": "video/webm", "wasm": "application/wasm", "woff": "font/woff", "woff2": "font/woff2",
    "otf": "font/otf", "ttf": "font/ttf", "iso_bmff": "video/mp4", "tar": "application/x-tar", "wav": "audio/wav",
    "avi": "video/x-msvideo", "html": "text/html", "xml": "application/xml", "svg": "image/svg+xml",
    "text": "text/plain", "binary": OCTET_STREAM, "empty": "an empty file",
}


def normalize_type(declared: str | None) -> str | None:
    """The essence of a declared type (``type/subtype``, lowercase, aliases folded), or None if malformed."""
    if not declared:
        return None
    essence = declared.split(";", 1)[0].strip().lower()
    if not _TYPE_SYNTAX.match(essence) or len(essence) > MAX_TYPE_CHARS:
        return None
    return _ALIASES.get(essence, essence)


def _family(mime: str) -> str | None:
    """Binary media families within which a wrong label is corrected rather than refused."""
    top = mime.split("/", 1)[0]
    if top == "image" and mime != "image/svg+xml":
        return "image"
    return "media" if top in ("audio", "video") else None


def described(kind: str) -> str:
    """A kind as a client reads it: the usual content type of that content."""
    return _EXAMPLE_TYPE.get(kind, kind)


def checked_type(declared: str | None, kind: str) -> str:
    """The content type to record for a file declared as ``declared`` that sniffed as ``kind``.

    Raises :class:`ContentTypeMismatch` when they contradict each other.
    Unknown or malformed declarations are recorded as ``application/octet-stream``.
    """
    essence = normalize_type(declared)
    expect = KNOWN_TYPES.get(essence) if essence else None
    if essence is None or expect is None or expect is _ANY:
        return OCTET_STREAM
    if kind in expect.kinds:
        return essence
    sniffed = _EXAMPLE_TYPE.get(kind, "")
    if kind not in TEXT_KINDS and _family(sniffed) is not None and _family(sniffed) == _family(essence):
        return sniffed  # a PNG named .jpg, a WebM named .mp4: harmless, recorded as what it is
    raise ContentTypeMismatch(
        f"The file was declared as {essence} but its content looks like {described(kind)}; "
        f"send the right Content-Type for the part (or application/octet-stream)"
    )
