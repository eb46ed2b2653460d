"""Files uploaded through the review page's file inputs, as the browser sends them."""

from __future__ import annotations


def named_uploads(upload) -> list[tuple[str, bytes]]:
    """(name, bytes) of each file of a VFileInput upload (one file or a list)."""
    files = upload if isinstance(upload, list) else [upload]
    return [(file.get("name", "upload"), upload_bytes(file.get("content"))) for file in files]


def upload_bytes(content) -> bytes:
    """A file's content as the browser sent it: bytes, or a list of chunks for large files."""
    if isinstance(content, list | tuple):
        return b"".join(content)
    return content or b""
