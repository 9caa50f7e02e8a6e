"""multipart/form-data uploads as a stream of events, and safe file names.

:class:`UploadParser` is a pure state machine over werkzeug's sans-I/O
``MultipartDecoder``: bytes in (:meth:`UploadParser.feed`, any chunk size),
events out (:class:`FileStarted`, :class:`FileData`, :class:`FileEnded`). It
never holds more than :data:`PIECE_BYTES` + :data:`MAX_PART_HEADER_BYTES` of
the body, whatever the file size, so the caller can write the file to disk as
it arrives. Its guarantees:

- exactly one part, named ``file`` (``field``), carrying a filename; any other
  part is 422 ``invalid`` (``extra_forbidden`` / ``too_many_files``), no file
  part at all is 422 (``missing``);
- the file's bytes are counted as they arrive: one byte over
  ``max_file_bytes`` raises :class:`AttachmentTooLarge` (413
  ``attachment_too_large``) before that byte is handed on;
- a body that is not multipart/form-data is 415; a malformed one (no boundary,
  bad part headers, cut short) is 400 ``malformed_multipart``. Whatever the
  decoder raises on hostile input becomes one of these, never a 500.

:func:`sanitize_filename` turns a client's file name into one that is safe to
store and to offer back in ``Content-Disposition``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Union

from werkzeug.http import parse_options_header
from werkzeug.sansio import multipart as wz

from collab.errors import BadRequest, FieldError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

KIB = 1024
#: The decoder is fed at most this much at a time (larger chunks are split).
PIECE_BYTES = 64 * KIB
#: Room for a part's headers (and a preamble) in the decoder's buffer.
MAX_PART_HEADER_BYTES = 16 * KIB
#: Multipart framing allowed on top of the file in a request body (boundaries, part headers).
MULTIPART_OVERHEAD_BYTES = 64 * KIB
MAX_FILENAME_CHARS = 255
FALLBACK_FILENAME = "attachment"
_MAX_BOUNDARY_CHARS = 70  # RFC 2046
_MAX_PADDING_BYTES = 64  # whitespace a client may put after a boundary (RFC 2046 "transport padding")
_LINE_BREAK = re.compile(rb"[\r\n]")


class MalformedMultipart(BadRequest):
    code = "malformed_multipart"
    title = "The multipart/form-data body is malformed"


class AttachmentTooLarge(PayloadTooLarge):
    """The file (not just the request body) is over the configured limit."""

    code = "attachment_too_large"
    title = "The file is larger than the upload limit"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(f"Files may be at most {max_bytes} bytes")

    def extra(self) -> dict[str, int]:
        return {"max_bytes": self.max_bytes}


@dataclass(frozen=True, slots=True)
class FileStarted:
    filename: str              # as the client sent it: sanitize before use
    declared_type: str | None  # the part's Content-Type header, if any


@dataclass(frozen=True, slots=True)
class FileData:
    data: bytes


@dataclass(frozen=True, slots=True)
class FileEnded:
    size: int


Event = Union[FileStarted, FileData, FileEnded]


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type header (415 / 400 otherwise)."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype.lower() != "multipart/form-data":
        raise UnsupportedMediaType("Send the file as multipart/form-data, in the form field 'file'")
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > _MAX_BOUNDARY_CHARS or not boundary.isascii():
        raise MalformedMultipart("The multipart/form-data Content-Type needs a boundary of 1 to 70 ASCII characters")
    return boundary.encode("ascii")


class UploadParser:
    """Feed it the request body; it yields the one file's events (see the module docstring)."""

    def __init__(self, boundary: bytes, *, max_file_bytes: int, field: str = "file") -> None:
        self._decoder = wz.MultipartDecoder(boundary, max_form_memory_size=PIECE_BYTES + MAX_PART_HEADER_BYTES)
        self._field = field
        self._max_file_bytes = max_file_bytes
        self._in_file = False
        self._seen_file = False
        self._size = 0
        self._done = False
        self._held = b""
        # A boundary line: line break, "--", the boundary, "--", transport padding, line break.
        self._hold_bytes = len(boundary) + 8 + _MAX_PADDING_BYTES

    @property
    def file_bytes(self) -> int:
        """File bytes handed out so far."""
        return self._size

    def feed(self, chunk: bytes) -> list[Event]:
        data = self._held + chunk
        cut = self._safe_cut(data)
        self._held = data[cut:]
        return self._feed(data[:cut])

    def close(self) -> list[Event]:
        """The body ended: the last events; 400 if the multipart body was cut short, 422 if it had no file."""
        events = self._feed(self._held)
        self._held = b""
        self._receive(None)
        self._drain(events)
        if not self._done:
            raise MalformedMultipart("The multipart body ended before its closing boundary")
        if not self._seen_file:
            raise ValidationFailed([FieldError((self._field,), "Send the file in the form field 'file'", "missing")])
        return events

    def _feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        view = memoryview(data)
        for start in range(0, len(view), PIECE_BYTES):
            self._receive(bytes(view[start:start + PIECE_BYTES]))
            self._drain(events)
        return events

    def _safe_cut(self, data: bytes) -> int:
        """Where to stop feeding the decoder: before any line break near the end.

        werkzeug 3.1's decoder mis-parses a buffer that ends inside a boundary
        line (line break, ``--boundary``, the rest not yet arrived): it hands
        out the ``\r`` of the line break as file data. Holding back the tail
        from its first line break (at most :attr:`_hold_bytes`) means the
        decoder only ever sees whole boundary lines.
        """
        window = max(0, len(data) - self._hold_bytes)
        line_break = _LINE_BREAK.search(data, window)
        return line_break.start() if line_break else len(data)

    def _receive(self, data: bytes | None) -> None:
        if self._done:
            return  # bytes after the epilogue's end: ignored, like the epilogue itself
        try:
            self._decoder.receive_data(data)
        except Exception as exc:  # noqa: BLE001 - foreign parser on hostile input: a 400, never a 500
            raise MalformedMultipart("Part headers or preamble too large") from exc

    def _drain(self, events: list[Event]) -> None:
        while True:
            try:
                event = self._decoder.next_event()
            except Exception as exc:  # noqa: BLE001 - see _receive
                raise MalformedMultipart(f"Cannot parse the multipart body ({_reason(exc)})") from exc
            if isinstance(event, wz.NeedData):
                return
            if isinstance(event, wz.File):
                filename = _client_filename(event.filename, event.headers.get("Content-Disposition", ""))
                self._start(event.name, filename, event.headers.get("Content-Type"), events)
            elif isinstance(event, wz.Field):
                self._refuse_part(event.name)
            elif isinstance(event, wz.Data):
                if not self._in_file:
                    continue  # only the file's part is ever open (others are refused at their start)
                if event.data:
                    self._size += len(event.data)
                    if self._size > self._max_file_bytes:
                        raise AttachmentTooLarge(self._max_file_bytes)
                    events.append(FileData(event.data))
                if not event.more_data:
                    self._in_file = False
                    events.append(FileEnded(self._size))
            elif isinstance(event, wz.Epilogue):
                self._done = True
                return  # the decoder is complete: asking it for more raises
            # Preamble: ignored (RFC 2046)

    def _start(self, name: str | None, filename: str, declared_type: str | None, events: list[Event]) -> None:
        if name != self._field:
            self._refuse_part(name)
        if self._seen_file:
            raise ValidationFailed([FieldError((self._field,), "Send one file per request", "too_many_files")])
        self._seen_file = self._in_file = True
        events.append(FileStarted(filename, declared_type))

    def _refuse_part(self, name: str | None) -> None:
        where = (name or "<unnamed>")[:64]
        if name == self._field:
            raise ValidationFailed(
                [FieldError((self._field,), "The 'file' part must be a file (with a filename)", "not_a_file")]
            )
        raise ValidationFailed([FieldError((where,), "Only the form field 'file' is accepted", "extra_forbidden")])


_QUOTED_FILENAME = re.compile(r'(?:^|;)\s*filename\s*=\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def _client_filename(parsed: str, disposition: str) -> str:
    """The file name as the client meant it.

    werkzeug reads ``\\x`` in a quoted name as an escaped ``x``; but legacy
    browsers send Windows paths (``C:\\dir\\a.txt``) with bare backslashes,
    which would then glue the path into one name. Every backslash is a path
    separator to us, so a quoted name with one keeps its last segment.
    """
    if "filename*" in disposition.lower():
        return parsed  # RFC 5987 form: percent-encoded, no escapes
    match = _QUOTED_FILENAME.search(disposition)
    if match is not None and "\\" in match[1]:
        return match[1].rsplit("\\", 1)[-1]
    return parsed


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "part headers are not UTF-8"
    text = str(exc)
    return text[:120] if isinstance(exc, ValueError) and text else "malformed part"


# --- file names ------------------------------------------------------------------------------

#: Characters Windows refuses in file names (and quotes), replaced by "_".
_RESERVED = str.maketrans({c: "_" for c in '<>:"|?*'})
#: Unicode categories dropped: control, format (bidi overrides, zero-width),
#: surrogates, private use, unassigned, line/paragraph separators.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def sanitize_filename(raw: str | None, fallback: str = FALLBACK_FILENAME) -> str:
    """A safe display name for a client-supplied file name.

    Keeps the last path component (``../../etc/passwd`` -> ``passwd``,
    ``C:\\dir\\a.txt`` -> ``a.txt``), drops control and format characters
    (NUL, newlines, bidi overrides), turns other whitespace into single
    spaces, replaces ``<>:"|?*``, strips leading dots and surrounding spaces
    and trailing dots, and bounds the result to 255 characters keeping a short
    extension. Returns ``fallback`` when nothing is left.
    """
    if not raw:
        return fallback
    name = unicodedata.normalize("NFC", raw)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = []
    for char in name:
        category = unicodedata.category(char)
        if category in _DROPPED_CATEGORIES:
            continue
        kept.append(" " if category == "Zs" else char)
    name = " ".join("".join(kept).split())  # collapses runs of spaces, strips the ends
    name = name.translate(_RESERVED).lstrip(". ").rstrip(". ")
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16 and stem:
            name = stem[:MAX_FILENAME_CHARS - len(extension) - 1].rstrip(". ") + "." + extension
        else:
            name = name[:MAX_FILENAME_CHARS].rstrip(". ")
    return name or fallback
