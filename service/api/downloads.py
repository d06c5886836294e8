"""Streaming of stored blobs with HTTP range requests (RFC 9110, section 14)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from service.db.models import Blob
from service.db.results import iter_blob_bytes
from service.problems import Problem

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return the byte range ``[start, stop)`` that a ``Range`` header requests.

    Returns ``None`` when the header is ignored: another unit, or several
    ranges, for which this server sends the whole content.

    Raises:
        Problem: 416 when the range lies outside the content.
    """
    match = _RANGE_RE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        # A suffix range: the last N bytes.
        length = int(last)
        if length == 0:
            raise _unsatisfiable(size, header)
        return max(0, size - length), size
    start = int(first)
    stop = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size, header)
    return start, stop


def _unsatisfiable(size: int, header: str) -> Problem:
    return Problem(
        416,
        "range-not-satisfiable",
        "Range not satisfiable",
        f"Range {header!r} lies outside the content of {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


def blob_response(factory: sessionmaker[Session], blob: Blob, request: Request, *, filename: str) -> Response:
    """Return a blob as a streamed response, honouring ``Range`` and ``If-None-Match``.

    Args:
        factory: opens the session that reads the pieces while streaming.
        blob: the blob row.
        request: the request, for its ``Range`` and ``If-None-Match`` headers.
        filename: the file name offered in ``Content-Disposition``.
    """
    etag = f'"{blob.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Content-SHA256": blob.sha256,
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    start, stop, status_code = 0, blob.size, 200
    range_header = request.headers.get("range")
    if range_header and blob.size > 0:
        byte_range = parse_range(range_header, blob.size)
        if byte_range is not None:
            start, stop = byte_range
            status_code = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{blob.size}"
    headers["Content-Length"] = str(stop - start)
    blob_id = blob.id

    def chunks() -> Iterator[bytes]:
        with factory() as session:
            row = session.get_one(Blob, blob_id)
            yield from iter_blob_bytes(session, row, start, stop)

    return StreamingResponse(chunks(), status_code=status_code, media_type=blob.media_type, headers=headers)
