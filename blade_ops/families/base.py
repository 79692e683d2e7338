"""What every model family adapter provides: the one protocol the rest of the pack asks instead of testing names.

A family adapter (``wan.py``, ``cogvideox.py``) is a frozen instance of a :class:`ModelFamily` subclass. Its fields
are facts (geometry from the model cards, the released settings BLADE reports in arXiv 2508.10774, Sec. 4.1); its
methods do what differs between families: the latent layout, the transformer call's extra arguments, where the
self-attention modules are and which ASA processor replaces them, the token grid of an input, the VAE's latent
scaling, the scheduler, key layouts and shipped variants, and the tiny test models. Every shape check in the pack
goes through :func:`check_video_size`, so one message tells the user which sizes are valid.

Several families may share one architecture (the Wan2.1 and Wan2.2 models are all diffusers'
``WanTransformer3DModel``): files are recognised by the architecture's key layout, then each family of that
architecture is asked whether it :meth:`~ModelFamily.accepts` the shapes. A family may run several transformers
("experts", e.g. one for high and one for low noise): :attr:`~ModelFamily.expert_names` names them as a diffusers
pipeline does, and :meth:`~ModelFamily.expert_at` says which one denoises a timestep.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ShippedVariant:
    """A released model whose configs ship with the pack (``blade_ops/models/configs/*.json``)."""

    name: str  # e.g. "wan2.1-t2v-1.3b"
    transformer_config: str  # file name in blade_ops/models/configs
    vae_config: str
    description: str


@dataclass(frozen=True)
class ModelFamily:
    """Facts and behaviour of one video model family (see the module docstring)."""

    name: str  # registry key, e.g. in LoRA metadata and training configs
    label: str  # for messages about model files: "Wan2.1", "CogVideoX"
    short_label: str  # for messages about LoRAs of any size of the family: "Wan", "CogVideoX"
    vae_temporal_stride: int  # frames per latent frame after the first
    frame_step: int  # valid frame counts are frame_step*k + 1 (see check_video_size)
    vae_spatial_stride: int  # pixels per latent pixel
    patch_t: int
    patch_hw: int
    latent_channels: int  # of the stock VAE; a loaded model's own count comes from latent_channels_of()
    max_text_tokens: int  # tokenizer max_length the model was trained with
    fps: int  # frame rate the model was trained for (REFERENCE.md: Wan 16, CogVideoX 8)
    default_negative_prompt: str
    text_in_self_attention: bool  # text tokens join the video tokens in self-attention
    default_size: tuple[int, int, int]  # width, height, frames the released models were trained at
    tiny_size: tuple[int, int, int]  # width, height, frames the tiny test models take
    baseline_guidance: float  # CFG of the family's 50-step baseline
    baseline_dynamic_guidance: bool  # CogVideoX-5B's baseline ramps CFG (diffusers use_dynamic_cfg)
    teacher_guidance: float  # CFG of the TDM teacher (REFERENCE.md: Wan 5.0, CogVideoX 3.5)
    teacher_regularisation: float  # lambda_reg of the fake-score loss (Wan 0, CogVideoX 0.5)
    normalised_student_loss: bool  # CogVideoX divides the pseudo-Huber loss by mean |x0 - x0_teacher|
    asa_preset: Mapping[str, Any]  # ASAConfig fields the authors set per family (ratio clamps, sample_gap)
    transformer_classes: tuple[str, ...]  # diffusers class names of the transformer
    vae_classes: tuple[str, ...]
    pipeline_classes: tuple[str, ...]
    text_encoder_classes: tuple[str, ...]
    block_list: str  # attribute of the transformer holding its blocks (compiled one by one)
    lora_targets: tuple[str, ...]  # module-name suffixes of the student LoRA
    # Paths inside each block of the per-token nn.Linear layers (attention projections, feed-forward) that fp8
    # linears may replace (blade_ops.models.fp8_linear); per-sample modulation layers are not listed.
    fp8_linears: tuple[str, ...]
    lora_keys: re.Pattern  # what a LoRA's keys of this family look like
    known_widths: Mapping[int, str]  # model width -> released model, to say what a LoRA was made for
    default_variant: str  # the shipped variant whose unseen settings an inferred config starts from
    flow_matching: bool  # velocity on sigma(t) = t / 1000 (Wan) rather than v-prediction on alphas_cumprod
    blade_timestep_spacing: str | None  # the blade sampler's spacing ("trailing" for CogVideoX), None = model's
    scheduler_defaults: Mapping[str, Any] = field(default_factory=dict)
    variants: tuple[ShippedVariant, ...] = ()  # released models whose configs ship with the pack
    # Families sharing one architecture (class names and key layouts) name its first family here; "" = its own.
    architecture: str = ""
    auto_detect: bool = True  # False: weights alike another family's; chosen only by name or a pipeline folder
    expert_names: tuple[str, ...] = ("transformer",)  # bundle attributes holding the transformers, diffusers' names
    expert_labels: tuple[str, ...] = ("",)  # what each expert does, for messages and tooltips ("high-noise")
    student_expert: str = "transformer"  # the expert training distils when the config names none
    baseline_steps: int = 50  # steps of the family's dense baseline
    baseline_guidance_2: float | None = None  # baseline CFG of the second expert (diffusers' guidance_scale_2)

    @property
    def arch(self) -> str:
        """The architecture's name: families with equal ``arch`` share class names, key layouts and converters."""
        return self.architecture or self.name

    # ---- geometry --------------------------------------------------------------------------------------------
    @property
    def pixel_multiple(self) -> int:
        """Width and height must be multiples of this (VAE stride x patch size)."""
        return self.vae_spatial_stride * self.patch_hw

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.vae_temporal_stride + 1

    def size_dict(self, size: tuple[int, int, int]) -> dict[str, int]:
        width, height, frames = size
        return {"width": width, "height": height, "frames": frames}

    def latent_shape(self, batch: int, grid: tuple[int, int, int], channels: int | None = None) -> tuple:
        """Shape of a latent video of ``grid`` (T, H, W) in this family's layout."""
        raise NotImplementedError

    def latent_channels_of(self, transformer: torch.nn.Module) -> int:
        """Latent channels a loaded transformer takes (its config's in_channels)."""
        return int(getattr(transformer.config, "in_channels", self.latent_channels))

    # ---- which family a model is -------------------------------------------------------------------------------
    def accepts(self, part: str, structure: Mapping[str, Any]) -> bool:
        """Whether weights with this structure (see :meth:`structure_from_shapes`) are a ``part`` of this family.

        Default: a transformer whose input channels are the family's latent channels; any VAE of the architecture.
        """
        if part == "transformer":
            return structure.get("in_channels", self.latent_channels) == self.latent_channels
        return True

    def owns_pipeline_index(self, index: Mapping[str, Any]) -> bool:
        """Whether a diffusers pipeline folder's model_index.json describes a model of this family."""
        return index.get("_class_name") in self.pipeline_classes

    # ---- experts -----------------------------------------------------------------------------------------------
    def expert_at(self, timestep: float, num_train_timesteps: int = 1000) -> int:
        """Index into :attr:`expert_names` of the transformer that denoises ``timestep`` (one expert: always 0)."""
        return 0

    def expert_index(self, name: str | None) -> int:
        """Index of an expert by name (None: the first); ValueError naming this family's experts otherwise."""
        if name is None:
            return 0
        if name not in self.expert_names:
            raise ValueError(
                f"{self.label} has no expert {name!r}; its transformers are {', '.join(self.expert_names)}."
            )
        return self.expert_names.index(name)

    def teacher_guidance_for(self, expert: int) -> float:
        """CFG of the distillation teacher when ``expert`` is the one distilled."""
        return self.teacher_guidance

    # ---- the transformer ---------------------------------------------------------------------------------------
    def owns_transformer(self, module: torch.nn.Module) -> bool:
        """Whether ``module`` is (a subclass of) this family's transformer class."""
        return any(cls.__name__ in self.transformer_classes for cls in type(module).__mro__)

    def transformer_kwargs(self, transformer: torch.nn.Module, latents: torch.Tensor) -> dict[str, Any]:
        """Extra arguments of the transformer call for latents of this shape (computed once per run)."""
        return {}

    def timestep_input(self, transformer: torch.nn.Module, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The transformer call's ``timestep`` for timestep ``t`` (a scalar or one per sample [B]) and ``latents``
        [B, ...]: one value per sample [B] (a family may expand it, e.g. one per video token)."""
        return t.expand(latents.shape[0]) if t.dim() == 0 else t

    def self_attentions(self, transformer: torch.nn.Module) -> list[torch.nn.Module]:
        """The attention modules ASA replaces, in block order."""
        raise NotImplementedError

    def asa_processor(self, handle: Any, layer: int) -> Any:
        """A diffusers attention processor computing this family's self-attention with ``handle.attend``."""
        raise NotImplementedError

    def token_grid(self, config: Any, hidden_states: torch.Tensor) -> tuple[int, int, int] | None:
        """(T, H, W) of the video tokens for a transformer input, None for an input that is not a latent video."""
        raise NotImplementedError

    # ---- latents and the VAE -----------------------------------------------------------------------------------
    def owns_vae_config(self, config: Mapping[str, Any]) -> bool:
        """Whether a VAE config (class name, else its keys) belongs to this family."""
        return config.get("_class_name") in self.vae_classes

    def latent_scaling(self, vae_config: Mapping[str, Any]) -> LatentScaling:
        """The scaling between this VAE's latents and the model's, read from the loaded VAE's config."""
        raise NotImplementedError

    def check_scaling(self, scaling: LatentScaling) -> None:
        """Raise ValueError when ``scaling`` cannot describe a VAE of this family."""
        raise NotImplementedError

    def to_vae_scale(self, latents: torch.Tensor, scaling: LatentScaling) -> torch.Tensor:
        """Model-scale latents in this family's layout -> the VAE's scale, [B, C, T, H, W]."""
        raise NotImplementedError

    def from_vae_scale(self, latents: torch.Tensor, scaling: LatentScaling) -> torch.Tensor:
        """VAE-scale latents [B, C, T, H, W] -> the model's scale and layout."""
        raise NotImplementedError

    # ---- text --------------------------------------------------------------------------------------------------
    def text_length(self, transformer: torch.nn.Module | None) -> int:
        """Tokens per prompt the model expects."""
        return self.max_text_tokens

    def encode_text(self, text_encoder: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] for token ids and their attention mask, as the family's pipeline computes them."""
        raise NotImplementedError

    def clean_prompts(self, prompts: list[str]) -> list[str]:
        return prompts

    # ---- variants and key layouts ------------------------------------------------------------------------------
    def structure_from_config(self, part: str, cfg: Mapping[str, Any]) -> dict:
        """The config values that tensor shapes determine (equal structures: the weights fit the config)."""
        raise NotImplementedError

    def structure_from_shapes(self, part: str, shapes: Mapping[str, tuple[int, ...]]) -> dict:
        """The structure diffusers-key tensor shapes imply; KeyError names a missing key."""
        raise NotImplementedError

    def to_diffusers_keys(self, part: str, layout: str, state_dict: dict) -> dict | None:
        """A state dict of ``part`` in key ``layout`` (e.g. "original") in diffusers' keys; None: no converter."""
        return None

    def config_overrides_from_structure(self, part: str, structure: dict, base: dict, overrides: dict) -> dict:
        """Structure values as config entries (a family may derive entries no tensor shows directly)."""
        return dict(structure)

    # ---- tiny models for tests and the demo --------------------------------------------------------------------
    def tiny_transformer_config(self, text_dim: int = 32) -> dict:
        raise NotImplementedError

    def tiny_transformer(self, seed: int = 0, text_dim: int = 32) -> torch.nn.Module:
        """This family's transformer at toy width, random weights seeded with ``seed``."""
        raise NotImplementedError

    def tiny_vae(self, seed: int = 0) -> torch.nn.Module:
        raise NotImplementedError

    def tiny_scheduler(self) -> Any:
        """The family's stock baseline scheduler."""
        raise NotImplementedError

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Arguments of the family's diffusers pipeline class besides its components (e.g. a boundary ratio)."""
        return {}

    def tiny_experts(self, seed: int = 0, text_dim: int = 32) -> dict[str, torch.nn.Module]:
        """The transformers after the first of a family with several, at toy width, by expert name."""
        return {
            name: self.tiny_transformer(seed + 10 * i, text_dim) for i, name in enumerate(self.expert_names[1:], 1)
        }


@dataclass(frozen=True)
class LatentScaling:
    """How one VAE's latents relate to the model's: per-channel statistics (Wan) or one scaling factor
    (CogVideoX). ``family`` names the adapter that checks the values and does the arithmetic."""

    family: str
    latents_mean: tuple[float, ...] | None = None  # one per latent channel
    latents_std: tuple[float, ...] | None = None
    scaling_factor: float | None = None

    def __post_init__(self) -> None:
        from . import get_family

        get_family(self.family).check_scaling(self)

    @property
    def channels(self) -> int | None:
        """Latent channels the statistics are for, or None where any count works."""
        return len(self.latents_mean) if self.latents_mean is not None else None


def _nearest(value: int, ok, step: int) -> list[int]:
    below = value - (value - ok) % step if value >= ok else ok
    return sorted({max(ok, below), max(ok, below) + step})


def check_video_size(family: ModelFamily, *, width: int, height: int, frames: int) -> None:
    """Raise ValueError naming every bad dimension and the nearest valid values.

    Frames must be ``frame_step``k+1 (the causal VAEs keep the first frame and compress the rest); width and height
    multiples of VAE stride x patch. Any such size works: nothing is tied to one resolution.
    """
    problems = []
    m = family.pixel_multiple
    s = family.frame_step
    for label, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value < m or value % m:
            near = _nearest(int(value), m, m) if isinstance(value, (int, float)) and value > 0 else [m]
            problems.append(f"{label}={value} must be a positive multiple of {m} (nearest valid: {near})")
    if not isinstance(frames, int) or frames < 1 or (frames - 1) % s:
        near = _nearest(int(frames), 1, s) if isinstance(frames, (int, float)) and frames > 0 else [1]
        examples = ", ".join(str(s * k + 1) for k in range(4))
        problems.append(f"frames={frames} must be {s}k+1, e.g. {examples}, ..., 49 (nearest valid: {near})")
    if problems:
        raise ValueError(f"Invalid video size for {family.name}: " + "; ".join(problems) + ".")
