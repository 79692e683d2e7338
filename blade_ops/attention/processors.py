"""Install ASA into a diffusers video transformer by swapping its self-attention processors.

Only self-attention changes (BLADE Sec. 3.2). Which modules those are, and the processor that computes them
around the attention call (projections through ``attn.to_q`` etc. so peft LoRA layers apply, qk-norm, rotary,
output projection), come from the model's family adapter (``blade_ops.families``); the processors call
:meth:`ASAHandle.attend`, which runs :func:`asa_attention` in place of SDPA.

The video grid (T, H, W) is not visible inside a processor: a forward pre-hook on the transformer records it
from the latent ``hidden_states`` (the family adapter reads it).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..families import ModelFamily, family_of_transformer
from .asa import ASAStats, asa_attention
from .backends import get_backend, resolve_backend
from .config import ASAConfig

logger = logging.getLogger(__name__)

__all__ = ["ASAHandle", "install_asa", "remove_asa", "get_asa_handle"]

_HANDLE_ATTR = "_blade_asa_handle"


class ASAHandle:
    """Per-model ASA state: config, resolved backend, current grid and step, densities of the last forward."""

    def __init__(self, family: ModelFamily, config: ASAConfig, backend: str, device: torch.device) -> None:
        self.family = family
        self.config = config
        self.requested_backend = backend
        self.backend = resolve_backend(backend, device)
        self.grid: tuple[int, int, int] | None = None
        self.step: int | None = None
        self.stats = ASAStats()
        self._layer_density: dict[int, torch.Tensor] = {}
        self._originals: dict[int, object] = {}
        self._hook = None

    def set_step(self, step_index: int) -> None:
        """Tell ASA which sampling step runs next; steps < ``config.dense_steps`` use dense attention."""
        if not isinstance(step_index, int) or step_index < 0:
            raise ValueError(f"step_index={step_index!r} must be an integer >= 0.")
        self.step = step_index

    def is_dense(self, layer: int) -> bool:
        """Whether ``layer`` runs dense attention at the current step."""
        if layer in self.config.dense_layers:
            return True
        return self.step is not None and self.step < self.config.dense_steps

    def layer_density(self) -> dict[int, float]:
        """Kept-block fraction per layer index in the latest forward (dense layers report 1.0)."""
        return {i: float(d) for i, d in sorted(self._layer_density.items())}

    def backend_for(self, device: torch.device) -> str:
        """The backend for tensors on ``device`` ("auto" re-resolves when the model moved between devices)."""
        if self.requested_backend == "auto":
            name = resolve_backend("auto", device)
            if name != self.backend:
                logger.info("ASA backend re-resolved for %s: %s -> %s", device, self.backend, name)
                self.backend = name
        return self.backend

    def _record(self, layer: int, density: torch.Tensor) -> None:
        self._layer_density[layer] = density

    # Never traced by torch.compile: the step and layer index it reads would specialise a compiled block per layer
    # and per step (hitting dynamo's recompile limit), and ASA's data-dependent block selection breaks graphs. A
    # compiled block (blade_ops.pipeline.compile) breaks its graph here and ASA runs its own compiled kernels.
    @torch.compiler.disable
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_text: int,
               text_first: bool) -> torch.Tensor:
        """Attention of ``layer`` on q, k, v [B, H, L, D]: ASA, or SDPA where the layer or step runs dense."""
        if self.is_dense(layer):
            self._record(layer, torch.ones((), device=q.device))
            return F.scaled_dot_product_attention(q, k, v)
        if self.grid is None:
            raise RuntimeError(
                "ASA does not know the video grid: the transformer's forward pre-hook did not run. Call the "
                "transformer module itself (not a block) after install_asa()."
            )
        out = asa_attention(
            q, k, v, grid=self.grid, num_text_tokens=num_text, config=self.config,
            backend=self.backend_for(q.device), stats=self.stats, text_first=text_first,
        )
        self._record(layer, self.stats.last)
        return out

    def __repr__(self) -> str:
        return (f"ASAHandle(family={self.family.name!r}, backend={self.backend!r}, grid={self.grid}, "
                f"step={self.step})")


def _grid_hook(handle: ASAHandle, family, cfg):
    def hook(module, args, kwargs):
        grid = family.token_grid(cfg, kwargs.get("hidden_states", args[0] if args else None))
        if grid is not None:
            handle.grid = grid
        return None

    return hook


def get_asa_handle(transformer: torch.nn.Module) -> ASAHandle | None:
    """The handle of an ASA-equipped transformer, or None."""
    return getattr(transformer, _HANDLE_ATTR, None)


def install_asa(transformer: torch.nn.Module, config: ASAConfig | None = None, backend: str = "auto") -> ASAHandle:
    """Swap the self-attention processors of a Wan or CogVideoX transformer for ASA; returns the handle.

    ``config`` defaults to :meth:`ASAConfig.for_family` of the model's family. ``backend``: "auto" or a registered
    backend name; a missing backend is an error now, never a silent dense fallback later. Installing twice
    replaces the first installation.
    """
    try:
        family = family_of_transformer(transformer)
    except ValueError as err:
        raise ValueError(f"install_asa: {err}") from None
    if config is None:
        config = ASAConfig.for_family(family.name)
    if not isinstance(config, ASAConfig):
        raise ValueError(f"config must be an ASAConfig; got {type(config).__name__}.")
    if backend != "auto":
        get_backend(backend)  # raises now if the package is missing
    if get_asa_handle(transformer) is not None:
        remove_asa(transformer)
    try:
        device = next(transformer.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    handle = ASAHandle(family, config, backend, device)
    attns = family.self_attentions(transformer)
    num_layers = len(attns)
    bad = [i for i in config.dense_layers if i >= num_layers]
    if bad:
        raise ValueError(
            f"dense_layers {bad} out of range for a model with {num_layers} blocks (valid: 0..{num_layers - 1})."
        )
    for i, attn in enumerate(attns):
        handle._originals[i] = attn.processor
        attn.set_processor(family.asa_processor(handle, i))
    handle._hook = transformer.register_forward_pre_hook(
        _grid_hook(handle, family, transformer.config), with_kwargs=True
    )
    setattr(transformer, _HANDLE_ATTR, handle)
    logger.info("ASA installed on %s (%d layers), backend=%s, %s", family.name, num_layers, handle.backend, config)
    return handle


def remove_asa(transformer: torch.nn.Module) -> None:
    """Put back the exact processor objects that were there before :func:`install_asa`."""
    handle = get_asa_handle(transformer)
    if handle is None:
        return
    for i, attn in enumerate(handle.family.self_attentions(transformer)):
        if i in handle._originals:
            attn.set_processor(handle._originals[i])
    if handle._hook is not None:
        handle._hook.remove()
    delattr(transformer, _HANDLE_ATTR)
