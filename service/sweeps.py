"""Parameter sweeps: expand a base spec and a table of values into child specs.

A path in ``vary`` names one value of the spec in JSON path notation:
``$.epochs``, ``network.connections.exc.weight.high`` or
``$.network.populations["e-cells"].tau_mem``; a list element is ``[i]``. The
leading ``$.`` is optional. Every key on the way must exist in the base spec
(after defaults are filled in), except the last, which may be new.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from typing import Any

_TOKEN_RE = re.compile(r"""\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]""")


class SweepPathError(ValueError):
    """A ``vary`` path that is malformed or does not lead into the base spec."""


def parse_path(path: str) -> list[str | int]:
    """Split a JSON path into keys and list indices.

    Raises:
        SweepPathError: if the path is empty or malformed.
    """
    text = path if path.startswith("$") else "$." + path
    position, parts = 1, []
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise SweepPathError(
                f"path {path!r} is malformed at character {position}: use keys separated by '.', "
                'list indices as [0] and quoted keys as ["name"]'
            )
        key, index, quoted = match.groups()
        if key is not None:
            parts.append(key)
        elif index is not None:
            parts.append(int(index))
        else:
            parts.append(json.loads(quoted))
        position = match.end()
    if not parts:
        raise SweepPathError(f"path {path!r} names the whole spec; name one value inside it")
    return parts


def set_path(document: Any, parts: list[str | int], value: Any, *, path: str) -> None:
    """Replace the value at ``parts`` in ``document`` (in place).

    Raises:
        SweepPathError: if a key or index on the way does not exist.
    """
    current = document
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(current, dict) and isinstance(part, str):
            if last:
                current[part] = copy.deepcopy(value)
                return
            if part not in current:
                raise SweepPathError(f"path {path!r}: the base spec has no key {part!r} there")
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int):
            if part >= len(current):
                raise SweepPathError(f"path {path!r}: index {part} is past the end of a list of {len(current)}")
            if last:
                current[part] = copy.deepcopy(value)
                return
            current = current[part]
        else:
            kind = type(current).__name__ if current is not None else "null"
            raise SweepPathError(f"path {path!r}: cannot step into {part!r} of a {kind} value")


def combinations(vary: dict[str, list[Any]], mode: str) -> list[dict[str, Any]]:
    """Return the values of each child job, keyed by path, in a fixed order.

    Raises:
        SweepPathError: for ``zip`` with lists of different lengths, or an empty list.
    """
    for path, values in vary.items():
        if not values:
            raise SweepPathError(f"path {path!r} has an empty list of values; give at least one")
    paths = list(vary)
    if mode == "zip":
        lengths = {len(values) for values in vary.values()}
        if len(lengths) != 1:
            raise SweepPathError(f"mode 'zip' needs lists of one length, got lengths {sorted(lengths)}")
        rows = zip(*(vary[path] for path in paths))
    else:
        rows = itertools.product(*(vary[path] for path in paths))
    return [dict(zip(paths, row)) for row in rows]


def child_count(vary: dict[str, list[Any]], mode: str) -> int:
    """Return how many child jobs a sweep expands into, without expanding it."""
    if mode == "zip":
        return min((len(values) for values in vary.values()), default=0)
    count = 1
    for values in vary.values():
        count *= len(values)
    return count


def expand(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``base`` with every path in ``values`` set."""
    document = copy.deepcopy(base)
    for path, value in values.items():
        set_path(document, parse_path(path), value, path=path)
    return document
