"""Checks of the values a node receives, made by the node that holds the input so that the message names that node
and that input. ComfyUI's own range check lets NaN through (every comparison with NaN is false), and scripts and API
prompts reach the nodes without any check at all."""

from __future__ import annotations

import math


def finite_float(value: object, name: str, node: str, spec: dict | None = None) -> float:
    """``value`` as a float; ValueError naming ``node`` and ``name`` when it is not a number, NaN, infinite, or
    outside ``spec``'s min..max (the input's own INPUT_TYPES options)."""
    spec = spec or {}
    low, high = spec.get("min", -math.inf), spec.get("max", math.inf)
    where = f" between {low:g} and {high:g}" if math.isfinite(low) and math.isfinite(high) else ""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{node}: {name}={value!r} is not a number; set {name} to a number{where}.") from None
    if not math.isfinite(number):
        raise ValueError(f"{node}: {name} is {number}; set {name} to a finite number{where}.")
    if not low <= number <= high:
        raise ValueError(f"{node}: {name}={number:g} is out of range; set {name} to a number{where}.")
    return number


def float_inputs(cls: type, node: str, **values: object) -> dict[str, float]:
    """:func:`finite_float` for several FLOAT inputs of node class ``cls``, each against its own INPUT_TYPES spec."""
    types = cls.INPUT_TYPES()
    spec = {**types.get("required", {}), **types.get("optional", {})}
    return {name: finite_float(value, name, node, spec[name][1]) for name, value in values.items()}
