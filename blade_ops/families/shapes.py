"""Reading a model's structure from its tensor shapes: the two look-ups every family's key-layout detection uses."""

from __future__ import annotations

import re
from collections.abc import Mapping


def count_indices(shapes: Mapping[str, tuple[int, ...]], pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over the keys (e.g. the number of blocks)."""
    return len({m[1] for k in shapes if (m := re.match(pattern, k))})


def need_shape(shapes: Mapping[str, tuple[int, ...]], key: str, what: str) -> tuple[int, ...]:
    """The shape of ``key``; a KeyError naming what it was needed for when the file has no such tensor."""
    if key not in shapes:
        raise KeyError(f"{key} (needed for {what})")
    return shapes[key]
