"""Wan2.1 (and the Wan architecture at any size): diffusers' WanTransformer3DModel and AutoencoderKLWan.

Facts from the Wan2.1 model cards and BLADE's settings (REFERENCE.md): patch (1, 2, 2), VAE stride (4, 8, 8), 16
latent channels with per-channel statistics, UMT5-XXL text of 512 tokens reaching the video only through
cross-attention (``attn2``), flow matching with UniPC (shift 3.0), 81 frames at 480x832 and 16 fps. Self-attention
is ``attn1`` of every block, with rotary positions applied to q and k before attention.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import LatentScaling, ModelFamily, ShippedVariant
from .shapes import count_indices, need_shape

if TYPE_CHECKING:
    import torch

WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy "
    "background, three legs, many people in the background, walking backwards"
)

# A Wan VAE residual block's entries, original layout -> diffusers (Wan2.1 and Wan2.2 VAEs alike).
WAN_VAE_RESNET_KEYS = {
    "residual.0.gamma": "norm1.gamma",
    "residual.2.weight": "conv1.weight",
    "residual.2.bias": "conv1.bias",
    "residual.3.gamma": "norm2.gamma",
    "residual.6.weight": "conv2.weight",
    "residual.6.bias": "conv2.bias",
    "shortcut.weight": "conv_shortcut.weight",
    "shortcut.bias": "conv_shortcut.bias",
}

try:  # optional, as in the Wan reference: repairs mojibake in user prompts
    import ftfy
except ImportError:
    ftfy = None


def clean_prompt(text: str) -> str:
    """Wan's prompt clean-up: fix text (ftfy if installed), unescape HTML twice, collapse whitespace."""
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class WanFamily(ModelFamily):
    """The Wan architecture: latents [B, C, T, H, W], self-attention ``blocks[i].attn1``."""

    def latent_shape(self, batch: int, grid: tuple[int, int, int], channels: int | None = None) -> tuple:
        t, h, w = grid
        return (batch, channels or self.latent_channels, t, h, w)

    def self_attentions(self, transformer: torch.nn.Module) -> list[torch.nn.Module]:
        return [block.attn1 for block in transformer.blocks]

    def asa_processor(self, handle: Any, layer: int) -> Any:
        from .wan_asa import WanASAProcessor

        return WanASAProcessor(handle, layer)

    def token_grid(self, config: Any, hidden_states: torch.Tensor) -> tuple[int, int, int] | None:
        if hidden_states is None or hidden_states.dim() != 5:
            return None
        pt, ph, pw = config.patch_size
        _, _, frames, height, width = hidden_states.shape
        return frames // pt, height // ph, width // pw

    def accepts(self, part: str, structure: Mapping[str, Any]) -> bool:
        """A transformer taking this family's latent channels, a VAE making them."""
        if part == "vae":
            return structure.get("z_dim") == self.latent_channels
        return super().accepts(part, structure)

    # ---- latents and the VAE -----------------------------------------------------------------------------------
    def owns_vae_config(self, config: Mapping[str, Any]) -> bool:
        if "_class_name" in config:
            return super().owns_vae_config(config)
        return config.get("latents_mean") is not None and config.get("latents_std") is not None

    def latent_scaling(self, vae_config: Mapping[str, Any]) -> LatentScaling:
        mean, std = vae_config.get("latents_mean"), vae_config.get("latents_std")
        return LatentScaling(
            self.name, tuple(float(m) for m in mean) if mean else None, tuple(float(s) for s in std) if std else None
        )

    def check_scaling(self, scaling: LatentScaling) -> None:
        mean, std = scaling.latents_mean, scaling.latents_std
        if not mean or not std or len(mean) != len(std):
            raise ValueError(
                f"A Wan VAE config needs latents_mean and latents_std of equal length, got {mean!r} and {std!r}."
            )
        if any(s == 0 for s in std):
            raise ValueError(f"latents_std={std!r} contains 0, so the scaling cannot be inverted.")

    def _stats(self, scaling: LatentScaling, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        if latents.ndim != 5 or latents.shape[1] != scaling.channels:
            raise ValueError(
                f"Wan latents must be [B, {scaling.channels}, T, H, W] for this VAE, got shape {tuple(latents.shape)}."
            )
        shape = (1, scaling.channels, 1, 1, 1)
        # float32 first, then the latents' dtype: the constants ComfyUI holds, so every dtype gives its results
        mean = torch.tensor(scaling.latents_mean, dtype=torch.float32).view(shape).to(latents.device, latents.dtype)
        std = torch.tensor(scaling.latents_std, dtype=torch.float32).view(shape).to(latents.device, latents.dtype)
        return mean, std

    def to_vae_scale(self, latents: torch.Tensor, scaling: LatentScaling) -> torch.Tensor:
        mean, std = self._stats(scaling, latents)
        return latents * std + mean  # ComfyUI's Wan21.process_out

    def from_vae_scale(self, latents: torch.Tensor, scaling: LatentScaling) -> torch.Tensor:
        mean, std = self._stats(scaling, latents)
        return (latents - mean) / std  # ComfyUI's Wan21.process_in

    # ---- text --------------------------------------------------------------------------------------------------
    def clean_prompts(self, prompts: list[str]) -> list[str]:
        return [clean_prompt(p) for p in prompts]

    def encode_text(self, text_encoder: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Wan's cross-attention sees all 512 positions: every position after a prompt's true length is zero.
        hidden = text_encoder(ids, mask).last_hidden_state
        return hidden * mask.gt(0).unsqueeze(-1)

    # ---- variants ----------------------------------------------------------------------------------------------
    def structure_from_config(self, part: str, cfg: Mapping[str, Any]) -> dict:
        if part == "transformer":
            return {
                "inner_dim": cfg["num_attention_heads"] * cfg["attention_head_dim"],
                "num_layers": cfg["num_layers"],
                "ffn_dim": cfg["ffn_dim"],
                "in_channels": cfg["in_channels"],
                "out_channels": cfg.get("out_channels") or cfg["in_channels"],
                "text_dim": cfg["text_dim"],
                "freq_dim": cfg["freq_dim"],
                "patch_size": tuple(cfg["patch_size"]),
            }
        return {
            "base_dim": cfg["base_dim"],
            "z_dim": cfg["z_dim"],
            "dim_mult": tuple(cfg["dim_mult"]),
            "num_res_blocks": cfg["num_res_blocks"],
            "temperal_downsample": tuple(cfg["temperal_downsample"]),
        }

    def structure_from_shapes(self, part: str, shapes: Mapping[str, tuple[int, ...]]) -> dict:
        if part == "transformer":
            inner, cin, *patch = need_shape(shapes, "patch_embedding.weight", "width and patch size")
            out = need_shape(shapes, "proj_out.weight", "output channels")[0]
            return {
                "inner_dim": inner,
                "num_layers": count_indices(shapes, r"blocks\.(\d+)\."),
                "ffn_dim": need_shape(shapes, "blocks.0.ffn.net.0.proj.weight", "FFN width")[0],
                "in_channels": cin,
                "out_channels": out // (patch[0] * patch[1] * patch[2]),
                "text_dim": need_shape(shapes, "condition_embedder.text_embedder.linear_1.weight", "text width")[1],
                "freq_dim": need_shape(shapes, "condition_embedder.time_embedder.linear_1.weight", "time width")[1],
                "patch_size": tuple(patch),
            }
        base = need_shape(shapes, "encoder.conv_in.weight", "base width")[0]
        stages = count_indices(shapes, r"decoder\.up_blocks\.(\d+)\.")
        nrb = count_indices(shapes, r"decoder\.up_blocks\.0\.resnets\.(\d+)\.") - 1
        dim_mult, temporal = [], []
        for s in range(stages):
            first = s * (nrb + 1)  # encoder.down_blocks is flat: nrb resnets then one resample per stage
            dim_mult.append(need_shape(shapes, f"encoder.down_blocks.{first}.conv1.weight", "stage widths")[0] // base)
            if s < stages - 1:
                temporal.append(f"encoder.down_blocks.{first + nrb}.time_conv.weight" in shapes)
        return {
            "base_dim": base,
            "z_dim": need_shape(shapes, "post_quant_conv.weight", "latent channels")[0],
            "dim_mult": tuple(dim_mult),
            "num_res_blocks": nrb,
            "temperal_downsample": tuple(temporal),
        }

    def to_diffusers_keys(self, part: str, layout: str, state_dict: dict) -> dict | None:
        from ..models import keymaps

        if layout != "original":
            return None
        if part == "transformer":
            return keymaps.wan_transformer_to_diffusers(state_dict)
        return keymaps.wan_vae_to_diffusers(state_dict)

    def config_overrides_from_structure(self, part: str, structure: dict, base: dict, overrides: dict) -> dict:
        s = dict(structure)
        if part == "transformer":
            # The width is heads x head_dim; no tensor shows the split, so keep the base variant's head size.
            inner = s.pop("inner_dim")
            head_dim = overrides.get("attention_head_dim", base["attention_head_dim"])
            if "num_attention_heads" not in overrides:
                if inner % head_dim:
                    raise ValueError(
                        f"width {inner} is not a multiple of the head size {head_dim}, so the head count cannot be "
                        f"inferred; pass config={{'num_attention_heads': H, 'attention_head_dim': D}} with H*D = "
                        f"{inner}"
                    )
                s["num_attention_heads"] = inner // head_dim
        return s

    # ---- tiny models -------------------------------------------------------------------------------------------
    def tiny_transformer_config(self, text_dim: int = 32) -> dict:
        return dict(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=text_dim, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        )

    def tiny_transformer(self, seed: int = 0, text_dim: int = 32) -> torch.nn.Module:
        import torch
        from diffusers import WanTransformer3DModel

        torch.manual_seed(seed)
        return WanTransformer3DModel(**self.tiny_transformer_config(text_dim)).eval()

    def tiny_vae(self, seed: int = 0) -> torch.nn.Module:
        import torch
        from diffusers import AutoencoderKLWan

        torch.manual_seed(seed)
        return AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).eval()

    def tiny_scheduler(self) -> Any:
        """UniPC flow matching with this family's settings (Wan2.1: shift 3.0)."""
        from diffusers import UniPCMultistepScheduler

        return UniPCMultistepScheduler(**{k: v for k, v in self.scheduler_defaults.items() if not k.startswith("_")})


WAN = WanFamily(
    name="wan",
    short_label="Wan",
    label="Wan2.1",
    vae_temporal_stride=4,
    frame_step=4,
    vae_spatial_stride=8,
    patch_t=1,
    patch_hw=2,
    latent_channels=16,
    max_text_tokens=512,
    fps=16,
    default_negative_prompt=WAN_NEGATIVE_PROMPT,
    text_in_self_attention=False,
    default_size=(832, 480, 81),
    tiny_size=(64, 64, 5),  # a 2 x 4 x 4 token grid
    baseline_guidance=5.0,
    baseline_dynamic_guidance=False,
    teacher_guidance=5.0,
    teacher_regularisation=0.0,
    normalised_student_loss=False,
    # Wan2.1: 32,760 tokens, 256 key blocks; 0.17 keeps <= 44 blocks, sample_gap 30 adds 1/30 pooled keys.
    asa_preset={"min_ratio": 0.05, "max_ratio": 0.17, "sample_gap": 30},
    transformer_classes=("WanTransformer3DModel",),
    vae_classes=("AutoencoderKLWan",),
    pipeline_classes=("WanPipeline",),
    text_encoder_classes=("UMT5EncoderModel",),
    block_list="blocks",
    lora_targets=("to_q", "to_k", "to_v", "to_out.0"),
    fp8_linears=(
        *(f"{attn}.{proj}" for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0")),
        "ffn.net.0.proj", "ffn.net.2",
    ),
    lora_keys=re.compile(r"(^|\.)blocks\.\d+\.(attn1|attn2|ffn|self_attn|cross_attn)\."),
    known_widths={1536: "Wan2.1 1.3B", 5120: "Wan 14B", 3072: "Wan2.2 5B"},
    default_variant="wan2.1-t2v-1.3b",
    variants=(
        ShippedVariant(
            "wan2.1-t2v-1.3b", "wan2.1-t2v-1.3b_transformer.json", "wan2.1_vae.json",
            "Wan2.1 text-to-video 1.3B: dim 1536, 30 blocks, 12 heads x 128",
        ),
        ShippedVariant(
            "wan2.1-t2v-14b", "wan2.1-t2v-14b_transformer.json", "wan2.1_vae.json",
            "Wan2.1 text-to-video 14B: dim 5120, 40 blocks, 40 heads x 128",
        ),
    ),
    flow_matching=True,
    blade_timestep_spacing=None,
    scheduler_defaults={
        "_class_name": "UniPCMultistepScheduler",
        "num_train_timesteps": 1000,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": 3.0,
        "solver_order": 2,
        "solver_type": "bh2",
        "predict_x0": True,
        "lower_order_final": True,
        "final_sigmas_type": "zero",
        "timestep_spacing": "linspace",
    },
)
