"""CogVideoX (2B, 5B): diffusers' CogVideoXTransformer3DModel and AutoencoderKLCogVideoX.

Facts from the CogVideoX model cards and BLADE's settings (REFERENCE.md): patch 2, VAE stride (4, 8, 8), latents
[B, T, C, H, W] scaled by one factor (1.15258426 for 2B, 0.7 for 5B), T5-XXL text of 226 tokens concatenated with
the video tokens in one joint self-attention (``attn1``, text first), v-prediction with CogVideoX's DPM solver,
49 frames at 480x720 and 8 fps; 5B uses 3D rotary positions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import LatentScaling, ModelFamily, ShippedVariant
from .shapes import count_indices, need_shape

if TYPE_CHECKING:
    import torch


def _crop_region(grid_hw: tuple[int, int], base_w: int, base_h: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Centre region of the base grid with the aspect ratio of ``grid_hw`` (CogVideoX 1.0 rotary positions)."""
    h, w = grid_hw
    if h / w > base_h / base_w:
        rh, rw = base_h, int(round(base_h / h * w))
    else:
        rw, rh = base_w, int(round(base_w / w * h))
    top, left = int(round((base_h - rh) / 2.0)), int(round((base_w - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def cogvideox_rotary(transformer: torch.nn.Module, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(cos, sin) [T*H*W/p^2, head_dim] for latents [B, T, C, H, W], or None for learned positions."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cfg = transformer.config
    if not cfg.use_rotary_positional_embeddings:
        return None
    p, p_t = cfg.patch_size, cfg.patch_size_t
    t, gh, gw = latents.shape[1], latents.shape[3] // p, latents.shape[4] // p
    base_w, base_h = cfg.sample_width // p, cfg.sample_height // p
    if p_t is None:  # CogVideoX 1.0: positions of a centre crop of the training grid
        cos, sin = get_3d_rotary_pos_embed(
            embed_dim=cfg.attention_head_dim, crops_coords=_crop_region((gh, gw), base_w, base_h),
            grid_size=(gh, gw), temporal_size=t, device=latents.device,
        )
    else:  # CogVideoX 1.5: sliced positions over the largest training grid
        cos, sin = get_3d_rotary_pos_embed(
            embed_dim=cfg.attention_head_dim, crops_coords=None, grid_size=(gh, gw),
            temporal_size=(t + p_t - 1) // p_t, grid_type="slice", max_size=(base_h, base_w), device=latents.device,
        )
    return cos, sin


@dataclass(frozen=True)
class CogVideoXFamily(ModelFamily):
    """The CogVideoX architecture: latents [B, T, C, H, W], joint attention ``transformer_blocks[i].attn1``."""

    def latent_shape(self, batch: int, grid: tuple[int, int, int], channels: int | None = None) -> tuple:
        t, h, w = grid
        return (batch, t, channels or self.latent_channels, h, w)

    def transformer_kwargs(self, transformer: torch.nn.Module, latents: torch.Tensor) -> dict[str, Any]:
        return {"image_rotary_emb": cogvideox_rotary(transformer, latents)}

    def self_attentions(self, transformer: torch.nn.Module) -> list[torch.nn.Module]:
        return [block.attn1 for block in transformer.transformer_blocks]

    def asa_processor(self, handle: Any, layer: int) -> Any:
        from .cogvideox_asa import CogVideoXASAProcessor

        return CogVideoXASAProcessor(handle, layer)

    def token_grid(self, config: Any, hidden_states: torch.Tensor) -> tuple[int, int, int] | None:
        if hidden_states is None or hidden_states.dim() != 5:
            return None
        p, pt = config.patch_size, config.patch_size_t
        _, frames, _, height, width = hidden_states.shape
        return frames // pt if pt else frames, height // p, width // p

    # ---- latents and the VAE -----------------------------------------------------------------------------------
    def owns_vae_config(self, config: Mapping[str, Any]) -> bool:
        if "_class_name" in config:
            return super().owns_vae_config(config)
        return config.get("scaling_factor") is not None and config.get("latents_mean") is None

    def latent_scaling(self, vae_config: Mapping[str, Any]) -> LatentScaling:
        return LatentScaling(self.name, scaling_factor=vae_config.get("scaling_factor"))

    def check_scaling(self, scaling: LatentScaling) -> None:
        factor = scaling.scaling_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ValueError(f"A CogVideoX VAE config needs a positive scaling_factor, got {factor!r}.")

    def to_vae_scale(self, latents: torch.Tensor, scaling: LatentScaling) -> torch.Tensor:
        if latents.ndim != 5:
            raise ValueError(
                f"CogVideoX latents must be [B, T, C, H, W] (the transformer's layout), got {tuple(latents.shape)}."
            )
        return latents.permute(0, 2, 1, 3, 4) / scaling.scaling_factor

    def from_vae_scale(self, latents: torch.Tensor, scaling: LatentScaling) -> torch.Tensor:
        if latents.ndim != 5:
            raise ValueError(
                f"CogVideoX latents must be [B, C, T, H, W] (the VAE's layout), got shape {tuple(latents.shape)}."
            )
        return (latents * scaling.scaling_factor).permute(0, 2, 1, 3, 4).contiguous()

    # ---- text --------------------------------------------------------------------------------------------------
    def text_length(self, transformer: torch.nn.Module | None) -> int:
        """The transformer's max_text_seq_length (226 for the released models)."""
        if transformer is None:
            return self.max_text_tokens
        return int(getattr(transformer.config, "max_text_seq_length", self.max_text_tokens))

    def encode_text(self, text_encoder: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # No attention mask and padding kept: the model was trained on exactly these text tokens.
        return text_encoder(ids)[0]

    # ---- variants ----------------------------------------------------------------------------------------------
    def structure_from_config(self, part: str, cfg: Mapping[str, Any]) -> dict:
        if part == "transformer":
            return {
                "num_attention_heads": cfg["num_attention_heads"],
                "attention_head_dim": cfg["attention_head_dim"],
                "num_layers": cfg["num_layers"],
                "in_channels": cfg["in_channels"],
                "out_channels": cfg.get("out_channels") or cfg["in_channels"],
                "text_embed_dim": cfg["text_embed_dim"],
                "time_embed_dim": cfg["time_embed_dim"],
                "patch_size": cfg["patch_size"],
            }
        return {
            "block_out_channels": tuple(cfg["block_out_channels"]),
            "layers_per_block": cfg["layers_per_block"],
            "latent_channels": cfg["latent_channels"],
            "in_channels": cfg["in_channels"],
            "out_channels": cfg["out_channels"],
        }

    def structure_from_shapes(self, part: str, shapes: Mapping[str, tuple[int, ...]]) -> dict:
        if part == "transformer":
            proj = need_shape(shapes, "patch_embed.proj.weight", "width and patch size")
            if len(proj) != 4:
                raise ValueError("a CogVideoX 1.5 temporal patch embedding (Linear), which BLADE does not support")
            head_dim = need_shape(shapes, "transformer_blocks.0.attn1.norm_q.weight", "head size")[0]  # per-head norm
            p = proj[2]
            return {
                "num_attention_heads": proj[0] // head_dim,
                "attention_head_dim": head_dim,
                "num_layers": count_indices(shapes, r"transformer_blocks\.(\d+)\."),
                "in_channels": proj[1],
                "out_channels": need_shape(shapes, "proj_out.weight", "output channels")[0] // (p * p),
                "text_embed_dim": need_shape(shapes, "patch_embed.text_proj.weight", "text width")[1],
                "time_embed_dim": need_shape(shapes, "time_embedding.linear_1.weight", "time width")[0],
                "patch_size": p,
            }
        stages = count_indices(shapes, r"encoder\.down_blocks\.(\d+)\.")
        return {
            "block_out_channels": tuple(
                need_shape(shapes, f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight", "stage widths")[0]
                for i in range(stages)
            ),
            "layers_per_block": count_indices(shapes, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."),
            "latent_channels": need_shape(shapes, "encoder.conv_out.conv.weight", "latent channels")[0] // 2,
            "in_channels": need_shape(shapes, "encoder.conv_in.conv.weight", "input channels")[1],
            "out_channels": need_shape(shapes, "decoder.conv_out.conv.weight", "output channels")[0],
        }

    def to_diffusers_keys(self, part: str, layout: str, state_dict: dict) -> dict | None:
        from ..models import keymaps

        if (part, layout) == ("transformer", "sat"):
            return keymaps.cogvideox_sat_to_diffusers(state_dict)
        return None  # a SAT-layout VAE is recognised and refused by the loader

    # ---- tiny models -------------------------------------------------------------------------------------------
    def tiny_transformer_config(self, text_dim: int = 32) -> dict:
        # CogVideoX-5B layout (rotary positions, no learned positional table) at toy width.
        return dict(
            num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, time_embed_dim=8,
            text_embed_dim=text_dim, num_layers=2, sample_width=8, sample_height=8, sample_frames=9,
            patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16,
            use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False,
        )

    def tiny_transformer(self, seed: int = 0, text_dim: int = 32) -> torch.nn.Module:
        import torch
        from diffusers import CogVideoXTransformer3DModel

        torch.manual_seed(seed)
        return CogVideoXTransformer3DModel(**self.tiny_transformer_config(text_dim)).eval()

    def tiny_vae(self, seed: int = 0) -> torch.nn.Module:
        import torch
        from diffusers import AutoencoderKLCogVideoX

        torch.manual_seed(seed)
        return AutoencoderKLCogVideoX(
            in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=2,
            down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8), temporal_compression_ratio=4,
        ).eval()

    def tiny_scheduler(self) -> Any:
        from diffusers import CogVideoXDPMScheduler

        return CogVideoXDPMScheduler(**{k: v for k, v in self.scheduler_defaults.items() if not k.startswith("_")})


COGVIDEOX = CogVideoXFamily(
    name="cogvideox",
    short_label="CogVideoX",
    label="CogVideoX",
    vae_temporal_stride=4,
    # CogVideoX 1.0's VAE decodes latent frames in pairs after the first: an even latent count T gives 4T frames
    # instead of 4T - 3, so only odd T (8k+1 frames, e.g. 49) come back at the requested length.
    frame_step=8,
    vae_spatial_stride=8,
    patch_t=1,
    patch_hw=2,
    latent_channels=16,
    max_text_tokens=226,
    fps=8,
    default_negative_prompt="",
    text_in_self_attention=True,
    default_size=(720, 480, 49),
    tiny_size=(64, 64, 9),  # a 3 x 4 x 4 token grid
    baseline_guidance=6.0,
    baseline_dynamic_guidance=True,
    teacher_guidance=3.5,
    teacher_regularisation=0.5,
    normalised_student_loss=True,
    # CogVideoX-5B: 17,550 video + 226 text tokens; longer-range motion needs denser pooling (gap 15) and the
    # larger model tolerates a tighter cap (0.10).
    asa_preset={"min_ratio": 0.05, "max_ratio": 0.10, "sample_gap": 15},
    transformer_classes=("CogVideoXTransformer3DModel",),
    vae_classes=("AutoencoderKLCogVideoX",),
    pipeline_classes=("CogVideoXPipeline",),
    text_encoder_classes=("T5EncoderModel",),
    block_list="transformer_blocks",
    lora_targets=("to_q", "to_k", "to_v", "to_out.0"),
    # norm1.linear / norm2.linear (the adaptive-norm modulation) act once per sample, not per token: left as they are
    fp8_linears=("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2"),
    lora_keys=re.compile(r"(^|\.)transformer_blocks\.\d+\.(attn1|ff|norm1)\."),
    known_widths={1920: "CogVideoX-2B", 3072: "CogVideoX-5B"},
    default_variant="cogvideox-5b",
    variants=(
        ShippedVariant(
            "cogvideox-2b", "cogvideox-2b_transformer.json", "cogvideox-2b_vae.json",
            "CogVideoX-2B: 30 layers, 30 heads x 64, sincos positions, VAE scaling 1.15258426",
        ),
        ShippedVariant(
            "cogvideox-5b", "cogvideox-5b_transformer.json", "cogvideox-5b_vae.json",
            "CogVideoX-5B: 42 layers, 48 heads x 64, rotary positions, VAE scaling 0.7",
        ),
    ),
    flow_matching=False,
    blade_timestep_spacing="trailing",
    scheduler_defaults={
        "_class_name": "CogVideoXDPMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True,
        "snr_shift_scale": 1.0,  # CogVideoX-5B; the 2B model uses 3.0 and ships it in its scheduler config
        "set_alpha_to_one": True,
        "clip_sample": False,
        "steps_offset": 0,
        "timestep_spacing": "trailing",
    },
)
