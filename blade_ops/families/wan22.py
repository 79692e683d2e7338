"""Wan2.2 text-to-video: TI2V-5B and T2V-A14B, two variants of the Wan architecture (diffusers'
``WanTransformer3DModel``; everything not said here is the Wan adapter's).

Facts from the Wan2.2 release configs and diffusers' WanPipeline (REFERENCE.md, "Wan2.2"):

- TI2V-5B: dim 3072 = 24 heads x 128, ffn 14336, 30 layers, 48 latent channels in and out, with the Wan2.2 VAE
  (``AutoencoderKLWan(is_residual=True)``: 2x2 patches, stride (4, 16, 16), 48 per-channel statistics). Every video
  token gets its own timestep (diffusers' ``expand_timesteps``: the same t for all of them in text-to-video, one
  value per token of the grid). 121 frames at 704x1280, 24 fps; UniPC flow shift 5.0, baseline 50 steps CFG 5.0.
- T2V-A14B: two transformers of the Wan2.1-14B shape (dim 5120, 40 layers, 40 heads x 128, ffn 13824): the
  high-noise expert (diffusers' ``transformer``) denoises t >= 0.875 x 1000, the low-noise one (``transformer_2``)
  below (``boundary_ratio`` 0.875). Wan2.1 VAE, 16 fps; UniPC shift 12.0, baseline 40 steps with CFG 4.0 on the
  high-noise and 3.0 on the low-noise expert. Its experts have exactly the Wan2.1-14B shapes, so a single file is
  never taken for A14B unless the family is named or a second expert is given; a diffusers folder says so itself
  (``transformer_2`` and ``boundary_ratio`` in model_index.json).

Distillation (training.distill) trains one expert of A14B, by default the low-noise one: BLADE's 8-step rollout
visits 999, 874, ..., 124 and all but 999 are below the boundary. Student, fake score and teacher are that expert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import wan22_vae
from .base import ShippedVariant
from .wan import WAN, WanFamily

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class WanTI2VFamily(WanFamily):
    """Wan2.2 TI2V-5B: 48 latent channels from the Wan2.2 VAE, one timestep per video token."""

    def accepts(self, part: str, structure: Mapping[str, Any]) -> bool:
        if part == "vae":
            return structure.get("z_dim") == self.latent_channels and bool(structure.get("is_residual"))
        return super().accepts(part, structure)

    def owns_transformer(self, module: torch.nn.Module) -> bool:
        config = getattr(module, "config", None)
        channels = getattr(config, "in_channels", None)
        return super().owns_transformer(module) and channels == self.latent_channels

    def owns_vae_config(self, config: Mapping[str, Any]) -> bool:
        if "_class_name" in config and config["_class_name"] not in self.vae_classes:
            return False
        channels = config.get("z_dim") or len(config.get("latents_mean") or ())
        return channels == self.latent_channels

    def owns_pipeline_index(self, index: Mapping[str, Any]) -> bool:
        return super().owns_pipeline_index(index) and bool(index.get("expand_timesteps"))

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {"expand_timesteps": True}

    def timestep_input(self, transformer: torch.nn.Module, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """[B, tokens] float32: each sample's t for every video token (diffusers' expand_timesteps)."""
        batch, _, frames, height, width = latents.shape
        pt, ph, pw = transformer.config.patch_size
        tokens = (frames // pt) * (height // ph) * (width // pw)
        t = t.float().reshape(-1)
        return (t if t.numel() == batch else t.expand(batch)).unsqueeze(1).expand(batch, tokens)

    # ---- the Wan2.2 VAE ----------------------------------------------------------------------------------------
    def structure_from_config(self, part: str, cfg: Mapping[str, Any]) -> dict:
        return wan22_vae.structure_from_config(cfg) if part == "vae" else super().structure_from_config(part, cfg)

    def structure_from_shapes(self, part: str, shapes: Mapping[str, tuple[int, ...]]) -> dict:
        if part == "vae":
            return wan22_vae.structure_from_shapes(shapes)
        return super().structure_from_shapes(part, shapes)

    def to_diffusers_keys(self, part: str, layout: str, state_dict: dict) -> dict | None:
        if part == "vae" and layout == "original":
            return wan22_vae.to_diffusers(state_dict)
        return super().to_diffusers_keys(part, layout, state_dict)

    def config_overrides_from_structure(self, part: str, structure: dict, base: dict, overrides: dict) -> dict:
        if part == "vae":
            return {**structure, "patch_size": wan22_vae.patch_size(structure["in_channels"])}
        return super().config_overrides_from_structure(part, structure, base, overrides)

    # ---- tiny models -------------------------------------------------------------------------------------------
    def tiny_transformer_config(self, text_dim: int = 32) -> dict:
        return {**super().tiny_transformer_config(text_dim), "in_channels": 48, "out_channels": 48}

    def tiny_vae(self, seed: int = 0) -> torch.nn.Module:
        """The Wan2.2 VAE's layout (residual stages, 2x2 patches, 48 channels, stride 16) at toy width, with the
        released latent statistics."""
        import torch
        from diffusers import AutoencoderKLWan

        from ..models.variants import shipped_config

        stats = shipped_config(self.default_variant, "vae")
        torch.manual_seed(seed)
        return AutoencoderKLWan(
            base_dim=4, decoder_base_dim=6, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
            temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
            patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
            latents_mean=stats["latents_mean"], latents_std=stats["latents_std"],
        ).eval()


@dataclass(frozen=True)
class WanExpertsFamily(WanFamily):
    """Wan2.2 T2V-A14B: a high-noise and a low-noise transformer, switched at ``boundary_ratio`` x T."""

    boundary_ratio: float = 0.875  # the high-noise expert denoises t >= boundary_ratio * num_train_timesteps
    expert_guidance: tuple[float, ...] = (4.0, 3.0)  # CFG per expert (REFERENCE.md: 4.0 high, 3.0 low)

    def __post_init__(self) -> None:
        if not 0.0 < self.boundary_ratio < 1.0:
            raise ValueError(f"boundary_ratio={self.boundary_ratio} must lie in (0, 1).")
        if not len(self.expert_names) == len(self.expert_labels) == len(self.expert_guidance) == 2:
            raise ValueError(f"{self.name}: two experts need two names, labels and guidance scales.")

    def expert_at(self, timestep: float, num_train_timesteps: int = 1000) -> int:
        return 0 if float(timestep) >= self.boundary_ratio * num_train_timesteps else 1

    def teacher_guidance_for(self, expert: int) -> float:
        return self.expert_guidance[expert]

    def owns_pipeline_index(self, index: Mapping[str, Any]) -> bool:
        second = index.get(self.expert_names[1])
        has_second = isinstance(second, (list, tuple)) and any(s is not None for s in second)
        return super().owns_pipeline_index(index) and has_second and index.get("boundary_ratio") is not None

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {"boundary_ratio": self.boundary_ratio}


def _scheduler(shift: float) -> dict[str, Any]:
    return {**WAN.scheduler_defaults, "flow_shift": shift}


_WAN_FIELDS = dict(
    short_label=WAN.short_label,
    vae_temporal_stride=4,
    frame_step=4,
    patch_t=1,
    patch_hw=2,
    max_text_tokens=WAN.max_text_tokens,
    default_negative_prompt=WAN.default_negative_prompt,
    text_in_self_attention=False,
    baseline_dynamic_guidance=False,
    teacher_regularisation=0.0,
    normalised_student_loss=False,
    asa_preset=dict(WAN.asa_preset),  # the Wan2.1 paper values: same head size, patch and curve
    transformer_classes=WAN.transformer_classes,
    vae_classes=WAN.vae_classes,
    pipeline_classes=WAN.pipeline_classes,
    text_encoder_classes=WAN.text_encoder_classes,
    block_list=WAN.block_list,
    lora_targets=WAN.lora_targets,
    fp8_linears=WAN.fp8_linears,
    lora_keys=WAN.lora_keys,
    known_widths=dict(WAN.known_widths),
    flow_matching=True,
    blade_timestep_spacing=None,
    architecture=WAN.name,
)

WAN22_TI2V = WanTI2VFamily(
    name="wan2.2-ti2v-5b",
    label="Wan2.2 TI2V-5B",
    vae_spatial_stride=16,
    latent_channels=48,
    fps=24,
    default_size=(1280, 704, 121),
    tiny_size=(128, 128, 5),  # a 2 x 4 x 4 token grid
    baseline_guidance=5.0,
    teacher_guidance=5.0,
    default_variant="wan2.2-ti2v-5b",
    variants=(
        ShippedVariant(
            "wan2.2-ti2v-5b", "wan2.2-ti2v-5b_transformer.json", "wan2.2_vae.json",
            "Wan2.2 TI2V-5B: dim 3072, 30 blocks, 24 heads x 128, 48 latent channels (Wan2.2 VAE, stride 16)",
        ),
    ),
    scheduler_defaults=_scheduler(5.0),
    **_WAN_FIELDS,
)

WAN22_A14B = WanExpertsFamily(
    name="wan2.2-t2v-a14b",
    label="Wan2.2 T2V-A14B",
    vae_spatial_stride=8,
    latent_channels=16,
    fps=16,
    default_size=(1280, 720, 81),
    tiny_size=WAN.tiny_size,
    baseline_guidance=4.0,  # the high-noise expert's; baseline_guidance_2 is the low-noise one's
    baseline_guidance_2=3.0,
    baseline_steps=40,
    teacher_guidance=4.0,
    default_variant="wan2.2-t2v-a14b",
    variants=(
        ShippedVariant(
            "wan2.2-t2v-a14b", "wan2.2-t2v-a14b_transformer.json", "wan2.1_vae.json",
            "Wan2.2 T2V-A14B: two experts of dim 5120, 40 blocks, 40 heads x 128 (Wan2.1 VAE)",
        ),
    ),
    scheduler_defaults=_scheduler(12.0),
    auto_detect=False,
    expert_names=("transformer", "transformer_2"),
    expert_labels=("high-noise", "low-noise"),
    student_expert="transformer_2",
    **_WAN_FIELDS,
)
