"""Where model parts live while a video is made: GPU memory is the scarce resource.

A Wan2.1-14B transformer (28 GB in bf16), its UMT5-XXL text encoder (11 GB) and VAE do not all fit on one
consumer GPU, and each works in turn (text encoder, then the transformer for 8 steps, then the VAE). The
``offload`` policy says what happens to a part when it is not working:

- ``"none"``: every part moves to the execution device on first use and stays there (fastest).
- ``"model"``: a part moves to the execution device only while it works and goes back to the CPU afterwards
  (one part on the GPU at a time; costs a host<->device copy per use). A part used once per video (the text
  encoder) can be *streamed* instead: its repeated blocks visit the GPU one at a time during the forward. That
  moves the same bytes as moving it whole, but caps its GPU memory at one block plus the rest (UMT5-XXL: about
  2.5 GB instead of 11 GB), which is what lets Wan2.1-1.3B run in 12 GB.

The pipeline uses one call per stage::

    with on_device(bundle.text_encoder, "cuda", offload="model") as te:
        embeds = te(ids).last_hidden_state

or, through a bundle, ``with bundle.using("text_encoder") as te: ...`` (policy and device from the bundle).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)

OFFLOAD_POLICIES = ("none", "model")
OFFLOAD_DEVICE = torch.device("cpu")


def check_offload(policy: str) -> str:
    """Return ``policy`` if valid, else raise ValueError naming the valid policies."""
    if policy not in OFFLOAD_POLICIES:
        raise ValueError(f"Unknown offload policy {policy!r}; valid policies: {', '.join(OFFLOAD_POLICIES)}.")
    return policy


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> CUDA when available, else CPU; any other value as a torch.device (checked)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Invalid device {device!r} ({err}); use e.g. 'cpu', 'cuda', 'cuda:1' or 'auto'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device} was asked for but CUDA is not available here; use 'cpu' or 'auto'.")
    return device


def auto_dtype(device: str | torch.device | None) -> torch.dtype:
    """The weights dtype the command line and ``load_model_bundle(dtype="auto")`` pick for a device: bfloat16 on
    CUDA (what the released models use), float32 elsewhere (CPU kernels are slow or missing in bf16)."""
    return torch.bfloat16 if resolve_device(device).type == "cuda" else torch.float32


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return OFFLOAD_DEVICE


def _same(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device() if torch.cuda.is_available() else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def place(
    module: torch.nn.Module | None, device: str | torch.device, dtype: torch.dtype | None = None
) -> torch.nn.Module | None:
    """Move ``module`` (in place) to ``device`` and optionally cast floating weights to ``dtype``; None passes.

    Does nothing when the module is already there, so calling it before every use is cheap.
    """
    if module is None:
        return None
    device = resolve_device(device)
    if dtype is not None:
        module.to(dtype=dtype)
    if not _same(module_device(module), device):
        logger.debug("moving %s to %s", type(module).__name__, device)
        module.to(device)
    return module


def _block_lists(module: torch.nn.Module) -> list[torch.nn.ModuleList]:
    """The outermost ModuleLists of repeated blocks (e.g. a T5 encoder's ``encoder.block``)."""
    found: list[torch.nn.ModuleList] = []

    def visit(m: torch.nn.Module) -> None:
        for child in m.children():
            if isinstance(child, torch.nn.ModuleList) and len(child) > 1:
                found.append(child)
            else:
                visit(child)

    visit(module)
    return found


@contextmanager
def _streamed(module: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Everything but the repeated blocks on ``device``; each block moves there just for its own forward."""
    blocks = [b for blocks in _block_lists(module) for b in blocks]
    in_blocks = {id(p) for b in blocks for p in b.parameters()} | {id(t) for b in blocks for t in b.buffers()}
    for sub in module.modules():
        for param in sub.parameters(recurse=False):
            if id(param) not in in_blocks:
                param.data = param.data.to(device)
        for name, buf in sub.named_buffers(recurse=False):
            if id(buf) not in in_blocks:
                sub._buffers[name] = buf.to(device)

    def arrive(block: torch.nn.Module, args) -> None:
        block.to(device)

    def leave(block: torch.nn.Module, args, out) -> None:
        block.to(OFFLOAD_DEVICE)

    handles = [h for b in blocks for h in (b.register_forward_pre_hook(arrive), b.register_forward_hook(leave))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def on_device(
    module: torch.nn.Module | None, device: str | torch.device, *, offload: str = "model", stream: bool = False
) -> Iterator[torch.nn.Module | None]:
    """Run a block with ``module`` on ``device``; with ``offload="model"`` move it back to the CPU afterwards.

    With ``offload="none"`` the module stays on ``device`` (it is not returned to where it was). With
    ``offload="model"`` and ``stream=True`` (for a part used once, like the text encoder) its repeated blocks go to
    ``device`` one at a time during the forward instead (see the module docstring). The move back also happens
    when the block raises, so an interrupted run does not leave the GPU full.
    """
    check_offload(offload)
    target = resolve_device(device)
    if module is not None and stream and offload == "model" and not _same(target, OFFLOAD_DEVICE):
        module.to(OFFLOAD_DEVICE)
        with _streamed(module, target):
            try:
                yield module
            finally:
                module.to(OFFLOAD_DEVICE)
                torch.cuda.empty_cache()
        return
    place(module, device)
    try:
        yield module
    finally:
        if module is not None and offload == "model" and not _same(resolve_device(device), OFFLOAD_DEVICE):
            module.to(OFFLOAD_DEVICE)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
