"""Registry of block-sparse attention kernels (BLADE Sec. 3.2, step 5), keyed by name.

Every backend is one SDPA-shaped function::

    fn(q, k, v, block_mask, block_size, scale, *, kv_bias=None) -> (out, lse)

with q [B, H, Lq, D], k/v [B, H, Lk, D], block_mask [B, H, ceil(Lq/bs), ceil(Lk/bs)] bool (True = compute the
block), out [B, H, Lq, D] in q's dtype and lse [B, H, Lq] float32 (natural log of the softmax denominator over
the kept keys, scores scaled by ``scale``). ``kv_bias`` (a :class:`KVBias`, only for backends registered with
``supports_kv_bias``) adds a constant to the scores of ranges of keys; -inf excludes them. ASA uses it to fold
the pooled global tokens into the sparse call.

Availability is computed at import and never raises; asking for a backend that is not available raises a
RuntimeError naming the package and how to install it. There is no silent fallback to dense attention.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "AttentionBackend", "KVBias", "register", "get_backend", "resolve_backend", "available_backends", "BACKENDS",
    "AUTO_MEASURED_FWD_MS", "auto_order",
]

logger = logging.getLogger(__name__)

BackendFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class AttentionBackend:
    """One registered kernel and what it can do."""

    name: str
    fn: BackendFn
    available: bool
    install_hint: str  # how to get the package, named in the error when unavailable
    devices: tuple[str, ...]  # device types it runs on
    supports_kv_bias: bool  # can fold the pooled global tokens into the same call
    supports_backward: bool


BACKENDS: dict[str, AttentionBackend] = {}


@dataclass(frozen=True)
class KVBias:
    """Piecewise-constant additive score bias over key positions: ((start, stop, value), ...), 0 elsewhere.

    Hashable, so compiled kernels can be cached per layout instead of per tensor.
    """

    segments: tuple[tuple[int, int, float], ...]

    def to_tensor(self, length: int, device: torch.device | str) -> torch.Tensor:
        """The bias as a dense [length] float32 tensor."""
        bias = torch.zeros(length, dtype=torch.float32, device=device)
        for start, stop, value in self.segments:
            bias[start:stop] = value
        return bias


def register(
    name: str,
    *,
    available: bool,
    install_hint: str,
    devices: tuple[str, ...] = ("cpu", "cuda"),
    supports_kv_bias: bool = False,
    supports_backward: bool = True,
) -> Callable[[BackendFn], BackendFn]:
    """Decorator adding an SDPA-shaped block-sparse function to the registry under ``name``."""

    def deco(fn: BackendFn) -> BackendFn:
        BACKENDS[name] = AttentionBackend(
            name, fn, bool(available), install_hint, tuple(devices), supports_kv_bias, supports_backward
        )
        return fn

    return deco


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Names of the backends whose package imports (and that run on ``device``'s type, if given)."""
    kind = None if device is None else torch.device(device).type
    return [n for n, b in BACKENDS.items() if b.available and (kind is None or kind in b.devices)]


def get_backend(name: str, device: torch.device | str | None = None) -> AttentionBackend:
    """The backend called ``name``; RuntimeError if its package is missing or it cannot run on ``device``."""
    if name not in BACKENDS:
        raise ValueError(f"Unknown attention backend {name!r}; valid: {sorted(BACKENDS) + ['auto']}.")
    backend = BACKENDS[name]
    if not backend.available:
        raise RuntimeError(
            f"Attention backend {name!r} is not available: {backend.install_hint}. "
            "ASA never falls back to dense attention silently; pick another backend explicitly "
            f"(available here: {available_backends()})."
        )
    if device is not None and torch.device(device).type not in backend.devices:
        raise RuntimeError(
            f"Attention backend {name!r} runs on {backend.devices}, not on {torch.device(device).type!r}; "
            f"available for this device: {available_backends(device)}."
        )
    return backend


# "auto" on CUDA: ASA end to end at the rule's mask, bf16 forward, ms, per head dim, as measured in docs/BENCHMARKS.md
# section "block_sparse_attn beside flex" (benchmarks/block_sparse_backends.py; GPU and library commit named there).
# The faster installed backend wins for the call's head dim; without a head dim, the backend that won at every
# measured head dim, if one did, else flex.
AUTO_MEASURED_FWD_MS: dict[int, dict[str, float]] = {}
_AUTO_FALLBACK_CUDA = ("flex", "block_sparse_attn", "torch")
_AUTO_LOGGED: set[tuple] = set()


def auto_order(device_type: str, head_dim: int | None = None) -> tuple[str, ...]:
    """Backends "auto" tries, best first, on ``device_type`` for ``head_dim``."""
    if device_type != "cuda":
        return ("torch",)
    if head_dim is None:
        winners = {min(t, key=t.get) for t in AUTO_MEASURED_FWD_MS.values() if t}
        measured = {winner: 0.0 for winner in winners} if len(winners) == 1 else None
    else:
        measured = AUTO_MEASURED_FWD_MS.get(int(head_dim))
    if not measured:
        return _AUTO_FALLBACK_CUDA
    ranked = sorted(measured, key=measured.get)
    return tuple(ranked) + tuple(n for n in _AUTO_FALLBACK_CUDA if n not in ranked)


def resolve_backend(name: str, device: torch.device | str, head_dim: int | None = None) -> str:
    """Concrete backend name for ``name`` on ``device``; "auto" picks the best available one.

    auto: on CUDA the faster of ``flex`` and ``block_sparse_attn`` for ``head_dim`` by the measured table
    :data:`AUTO_MEASURED_FWD_MS`, falling back to the next installed one (flex when block_sparse_attn is absent); on
    CPU ``torch``. The choice is logged once at INFO per device type and head dim.
    """
    dev = torch.device(device)
    if name != "auto":
        get_backend(name, dev)
        return name
    for candidate in auto_order(dev.type, head_dim):
        backend = BACKENDS.get(candidate)
        if backend is not None and backend.available and dev.type in backend.devices:
            key = (dev.type, head_dim, candidate)
            if key not in _AUTO_LOGGED:
                _AUTO_LOGGED.add(key)
                logger.info(
                    "ASA attention backend 'auto' -> %r on %s%s (installed: %s)", candidate, dev.type,
                    "" if head_dim is None else f", head_dim {head_dim}", available_backends(dev),
                )
            return candidate
    raise RuntimeError(f"No block-sparse attention backend is available for device {dev}.")


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


from . import block_sparse as _block_sparse  # noqa: E402,F401  (registers "block_sparse_attn")
from . import flex as _flex  # noqa: E402,F401  (registers "flex")
from . import torch_backend as _torch_backend  # noqa: E402,F401  (registers "torch")
