"""Install ASA into diffusers' Wan and CogVideoX transformers by swapping self-attention processors.

Only self-attention changes (BLADE Sec. 3.2): Wan's ``attn1`` of every block (``attn2``, the text
cross-attention, keeps its processor) and CogVideoX's joint ``attn1`` (text tokens concatenated first by
diffusers; ASA moves them to the end, keeps their rows and columns dense, and moves them back). The processors
reproduce what the stock ``WanAttnProcessor`` / ``CogVideoXAttnProcessor2_0`` do around the attention call
(projections through ``attn.to_q`` etc. so peft LoRA layers apply, qk-norm, rotary embedding, output
projection) and call :func:`asa_attention` in place of SDPA.

The video grid (T, H, W) is not visible inside a processor: a forward pre-hook on the transformer records it
from the latent ``hidden_states`` and the patch sizes.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .asa import ASAStats, asa_attention
from .backends import get_backend, resolve_backend
from .config import ASAConfig

logger = logging.getLogger(__name__)

__all__ = ["ASAHandle", "install_asa", "remove_asa", "get_asa_handle"]

_HANDLE_ATTR = "_blade_asa_handle"


class ASAHandle:
    """Per-model ASA state: config, resolved backend, current grid and step, densities of the last forward."""

    def __init__(self, family: str, config: ASAConfig, backend: str, device: torch.device) -> None:
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

    def __repr__(self) -> str:
        return f"ASAHandle(family={self.family!r}, backend={self.backend!r}, grid={self.grid}, step={self.step})"


def _rotate_pairs_wan(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan rotary embedding on x [B, L, H, D] with interleaved (even, odd) pairs; cos/sin [1, L, 1, D]."""
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2).type_as(x)


def _rotate_pairs_cog(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """CogVideoX rotary embedding on x [B, H, S, D] (interleaved pairs); cos/sin [S, D]."""
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)
    cos, sin = cos.to(x.device)[None, None], sin.to(x.device)[None, None]
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class _ASAProcessorBase:
    def __init__(self, handle: ASAHandle, layer: int) -> None:
        self.handle = handle
        self.layer = layer

    # Never traced by torch.compile: the step and layer index it reads would specialise a compiled block per layer
    # and per step (hitting dynamo's recompile limit), and ASA's data-dependent block selection breaks graphs. A
    # compiled block (blade_ops.pipeline.compile) breaks its graph here and ASA runs its own compiled kernels.
    @torch.compiler.disable
    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_text: int, text_first: bool):
        handle = self.handle
        if handle.is_dense(self.layer):
            handle._record(self.layer, torch.ones((), device=q.device))
            return F.scaled_dot_product_attention(q, k, v)
        if handle.grid is None:
            raise RuntimeError(
                "ASA does not know the video grid: the transformer's forward pre-hook did not run. Call the "
                "transformer module itself (not a block) after install_asa()."
            )
        out = asa_attention(
            q, k, v, grid=handle.grid, num_text_tokens=num_text, config=handle.config,
            backend=handle.backend_for(q.device), stats=handle.stats, text_first=text_first,
        )
        handle._record(self.layer, handle.stats.last)
        return out


class WanASAProcessor(_ASAProcessorBase):
    """Self-attention (attn1) of a Wan block with ASA in place of SDPA."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(
                "WanASAProcessor replaces self-attention only (encoder_hidden_states=None, attention_mask=None); "
                "it was called with a cross-attention input or a mask."
            )
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key = attn.norm_q(query), attn.norm_k(key)
        query = query.unflatten(2, (attn.heads, -1))  # [B, L, H, D]
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query = _rotate_pairs_wan(query, *rotary_emb)
            key = _rotate_pairs_wan(key, *rotary_emb)
        out = self._attend(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), 0, False)
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)


class CogVideoXASAProcessor(_ASAProcessorBase):
    """Joint text+video self-attention (attn1) of a CogVideoX block with ASA in place of SDPA."""

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise ValueError("CogVideoXASAProcessor does not take an attention_mask (CogVideoX passes none).")
        text_len = encoder_hidden_states.shape[1]
        states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch, length, _ = states.shape
        query, key, value = attn.to_q(states), attn.to_k(states), attn.to_v(states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, length, attn.heads, head_dim).transpose(1, 2)  # [B, H, L, D]
        key = key.view(batch, length, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, length, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            rotated_q = _rotate_pairs_cog(query[:, :, text_len:], *image_rotary_emb)
            query = torch.cat([query[:, :, :text_len], rotated_q], dim=2)
            if not attn.is_cross_attention:
                rotated_k = _rotate_pairs_cog(key[:, :, text_len:], *image_rotary_emb)
                key = torch.cat([key[:, :, :text_len], rotated_k], dim=2)
        out = self._attend(query, key, value, text_len, True)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        encoder_out, video_out = out.split([text_len, length - text_len], dim=1)
        return video_out, encoder_out


def _family_of(transformer: torch.nn.Module) -> str:
    name = type(transformer).__name__
    if name.startswith("WanTransformer3DModel"):
        return "wan"
    if name.startswith("CogVideoXTransformer3DModel"):
        return "cogvideox"
    raise ValueError(
        "install_asa supports WanTransformer3DModel and CogVideoXTransformer3DModel; "
        f"got {type(transformer).__name__}."
    )


def _self_attentions(transformer: torch.nn.Module, family: str) -> list[torch.nn.Module]:
    blocks = transformer.blocks if family == "wan" else transformer.transformer_blocks
    return [block.attn1 for block in blocks]


def _grid_hook(handle: ASAHandle, family: str, cfg):
    def hook(module, args, kwargs):
        states = kwargs.get("hidden_states", args[0] if args else None)
        if states is None or states.dim() != 5:
            return None
        if family == "wan":
            pt, ph, pw = cfg.patch_size
            _, _, frames, height, width = states.shape
            handle.grid = (frames // pt, height // ph, width // pw)
        else:
            p, pt = cfg.patch_size, cfg.patch_size_t
            _, frames, _, height, width = states.shape
            handle.grid = (frames // pt if pt else frames, height // p, width // p)
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
    family = _family_of(transformer)
    if config is None:
        config = ASAConfig.for_family(family)
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
    attns = _self_attentions(transformer, family)
    num_layers = len(attns)
    bad = [i for i in config.dense_layers if i >= num_layers]
    if bad:
        raise ValueError(
            f"dense_layers {bad} out of range for a model with {num_layers} blocks (valid: 0..{num_layers - 1})."
        )
    proc_cls = WanASAProcessor if family == "wan" else CogVideoXASAProcessor
    for i, attn in enumerate(attns):
        handle._originals[i] = attn.processor
        attn.set_processor(proc_cls(handle, i))
    handle._hook = transformer.register_forward_pre_hook(
        _grid_hook(handle, family, transformer.config), with_kwargs=True
    )
    setattr(transformer, _HANDLE_ATTR, handle)
    logger.info("ASA installed on %s (%d layers), backend=%s, %s", family, num_layers, handle.backend, config)
    return handle


def remove_asa(transformer: torch.nn.Module) -> None:
    """Put back the exact processor objects that were there before :func:`install_asa`."""
    handle = get_asa_handle(transformer)
    if handle is None:
        return
    for i, attn in enumerate(_self_attentions(transformer, handle.family)):
        if i in handle._originals:
            attn.set_processor(handle._originals[i])
    if handle._hook is not None:
        handle._hook.remove()
    delattr(transformer, _HANDLE_ATTR)
