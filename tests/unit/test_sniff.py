"""Tests for collab.http.sniff: what the first bytes say, and the declared-type policy."""

from __future__ import annotations

import pytest

from collab.http.sniff import (
    KNOWN_TYPES, OCTET_STREAM, SNIFF_BYTES, ContentTypeMismatch, checked_type, normalize_type, sniff,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 40
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 40
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"
ZIP = b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 30
GZIP = b"\x1f\x8b\x08\x00" + b"\x00" * 20
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00"
HTML = b"  \n<!DOCTYPE html><html><body>hi</body></html>"
SCRIPT = b"<script>alert(document.cookie)</script>"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>x()</script></svg>'
CSV = b"id,name\n1,Ada\n2,Grace\n"
LATIN1 = "caf\xe9 cr\xe8me\n".encode("latin-1")
BINARY = bytes(range(256))


@pytest.mark.parametrize(("head", "kind"), [
    (PNG, "png"), (JPEG, "jpeg"), (b"GIF89a\x01\x00", "gif"), (PDF, "pdf"), (ZIP, "zip"), (GZIP, "gzip"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"), (b"RIFF\x24\x00\x00\x00WAVEfmt ", "wav"), (MP4, "iso_bmff"),
    (b"ID3\x04\x00\x00", "mp3"), (b"\xff\xfb\x90\x64\x00", "mp3"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),
    (HTML, "html"), (SCRIPT, "html"), (b"<P>para", "html"), (b"<!-- c -->", "html"), (b"\xef\xbb\xbf<html>", "html"),
    (SVG, "svg"), (b"<?xml version='1.0'?><note/>", "xml"), (CSV, "text"), (LATIN1, "text"),
    (b"\xff\xfeh\x00i\x00", "text"), (BINARY, "binary"), (b"", "empty"),
    (b"<ahem not a tag", "text"),  # "<a" must be followed by a space or ">"
    (b" " * 300 + b"\x00" * 300, "binary"),
])
def test_sniff_kinds(head: bytes, kind: str) -> None:
    assert sniff(head) == kind


def test_tar_is_recognized_at_offset_257() -> None:
    header = b"file.txt".ljust(257, b"\x00") + b"ustar\x0000"
    assert sniff(header.ljust(SNIFF_BYTES, b"\x00")) == "tar"


def test_only_the_first_bytes_count() -> None:
    assert sniff(CSV * 100 + b"\x00") == "text"  # the NUL is past SNIFF_BYTES
    assert sniff(b"a" * (SNIFF_BYTES - 1) + b"\x00") == "binary"


@pytest.mark.parametrize(("declared", "normalized"), [
    ("image/PNG", "image/png"), ("text/plain; charset=utf-8", "text/plain"), ("image/jpg", "image/jpeg"),
    ("  application/JSON ", "application/json"), ("", None), (None, None), ("png", None), ("text/", None),
    ("text/plain\r\nX-Evil: 1", None), ("a/" + "b" * 200, None),
])
def test_normalize_type(declared: str | None, normalized: str | None) -> None:
    assert normalize_type(declared) == normalized


@pytest.mark.parametrize(("declared", "head", "recorded"), [
    ("image/png", PNG, "image/png"),
    ("image/jpg", JPEG, "image/jpeg"),
    ("application/pdf", PDF, "application/pdf"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ZIP,
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("video/mp4", MP4, "video/mp4"),
    ("text/csv", CSV, "text/csv"),
    ("text/plain; charset=latin-1", LATIN1, "text/plain"),
    ("text/plain", HTML, "text/plain"),  # served as text with nosniff: harmless
    ("text/html", HTML, "text/html"),     # downloads are attachments with a sandbox CSP
    ("image/svg+xml", SVG, "image/svg+xml"),
    ("text/plain", b"", "text/plain"),
    ("audio/aac", b"\xff\xf1\x50\x80\x02\x1f\xfc" + BINARY, "audio/aac"),
    ("application/vnd.ms-excel", CSV, "application/vnd.ms-excel"),  # .csv as Windows browsers label it
    ("application/msword", ZIP, "application/msword"),
    # a wrong label within binary images or within audio/video is corrected, not refused
    ("image/jpeg", PNG, "image/png"),
    ("image/gif", JPEG, "image/jpeg"),
    ("video/mp4", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "video/webm"),
    ("audio/mpeg", b"OggS\x00\x02" + BINARY, "audio/ogg"),
])
def test_consistent_declarations_are_recorded(declared: str, head: bytes, recorded: str) -> None:
    assert checked_type(declared, sniff(head)) == recorded


@pytest.mark.parametrize(("declared", "head"), [
    ("text/html", PNG),          # a PNG declared as HTML
    ("image/png", HTML),         # an HTML page declared as an image
    ("image/png", SCRIPT),       # a script body declared as an image
    ("image/png", SVG),
    ("image/png", PDF),          # not an image at all
    ("video/mp4", PNG),          # an image is not a video
    ("application/vnd.ms-excel", HTML),  # an HTML page labelled as a spreadsheet
    ("application/msword", BINARY),      # binary without an Office signature
    ("application/pdf", BINARY),
    ("application/json", ZIP),   # binary declared as text
    ("text/plain", BINARY),
    ("image/png", b""),          # an empty "PNG"
    ("audio/aac", HTML),         # unsniffable media still refuses markup
    ("audio/aac", PNG),          # ... and other known signatures
])
def test_contradictions_are_refused(declared: str, head: bytes) -> None:
    with pytest.raises(ContentTypeMismatch) as caught:
        checked_type(declared, sniff(head))
    assert caught.value.status == 415 and caught.value.code == "content_type_mismatch"
    assert declared.split(";")[0] in caught.value.detail


@pytest.mark.parametrize("declared", [None, "", "application/octet-stream", "application/x-made-up", "bogus", "x/y;z"])
@pytest.mark.parametrize("head", [PNG, HTML, BINARY, b""])
def test_unknown_or_missing_types_are_recorded_as_octet_stream(declared: str | None, head: bytes) -> None:
    assert checked_type(declared, sniff(head)) == OCTET_STREAM


def test_every_known_type_fits_the_database_column() -> None:
    assert all(len(t) <= 100 and normalize_type(t) == t for t in KNOWN_TYPES)
