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
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = [
    "AttentionBackend", "KVBias", "register", "get_backend", "resolve_backend", "available_backends", "BACKENDS",
]

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


def resolve_backend(name: str, device: torch.device | str) -> str:
    """Concrete backend name for ``name`` on ``device``; "auto" picks the best available one.

    auto: on CUDA ``flex`` (compiled FlexAttention, forward and backward, folds the global branch) unless only
    ``block_sparse_attn`` is installed; on CPU ``torch``.
    """
    dev = torch.device(device)
    if name != "auto":
        get_backend(name, dev)
        return name
    order = ("flex", "block_sparse_attn", "torch") if dev.type == "cuda" else ("torch",)
    for candidate in order:
        backend = BACKENDS.get(candidate)
        if backend is not None and backend.available and dev.type in backend.devices:
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
