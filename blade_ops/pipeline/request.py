"""What one generation asks for and what it returns, validated before any model runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..families import FAMILIES, FamilySpec
from ..validation import check_eta, check_guidance, check_positive_int, check_prompts, check_seed, check_shift

# Sizes each model was trained at (frames x height x width), used when a request leaves them unset.
DEFAULT_SIZES: dict[str, dict[str, int]] = {name: f.size_dict(f.default_size) for name, f in FAMILIES.items()}


class GenerationCancelled(RuntimeError):
    """Raised when a step callback cancels a run; the models are left on their devices and usable."""

    def __init__(self, step: int, total: int):
        super().__init__(f"Generation cancelled after step {step} of {total}.")
        self.step, self.total = step, total


@dataclass(frozen=True)
class StepInfo:
    """Passed to the step callback after each denoising step. ``latents`` is the live state: do not modify."""

    step: int  # steps done, 1..total
    total: int
    timestep: float
    latents: torch.Tensor


@dataclass
class GenerationRequest:
    """One text-to-video run. Unset sizes take the family's defaults; unset steps the sampler's."""

    prompt: str | list[str]
    negative_prompt: str | list[str] | None = None  # None: the family's standard negative prompt (with CFG)
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    sampler: str = "blade"
    steps: int | None = None
    guidance: float = 1.0  # CFG scale; <= 1 runs one conditional pass per step
    guidance_2: float | None = None  # CFG of a family's second expert (Wan2.2 A14B low-noise); None: ``guidance``
    dynamic_guidance: bool = False  # CogVideoX-5B's cosine-ramped CFG, as diffusers' use_dynamic_cfg
    seed: int = 0
    shift: float | None = None  # Wan flow shift for scheduler samplers (None: model config, 3.0)
    eta: float | None = None  # TDM re-noising weight (None: 0.9)
    fps: int | None = None  # None: the family's (Wan 16, CogVideoX 8)
    offload: bool = False  # keep each part on the device only while it runs (fits 12 GB)
    vae_tiling: bool = False
    vae_slicing: bool = False
    # Wan latent frames per VAE decoder call: None sizes it to the resolution (1 with offload, the least memory)
    vae_chunk_frames: int | None = None
    max_sequence_length: int | None = None  # None: the family's (Wan 512, CogVideoX 226)

    def __post_init__(self):
        # The same checks as the command line and the nodes (blade_ops.validation), so all three accept the same.
        prompts = check_prompts(self.prompt)
        neg = self.negative_prompt
        if neg is not None and not isinstance(neg, str):
            if not isinstance(neg, (list, tuple)) or not all(isinstance(p, str) for p in neg):
                raise ValueError(f"negative_prompt={neg!r} must be None, a string or a list of strings.")
            if len(neg) not in (1, len(prompts)):
                raise ValueError(f"negative_prompt has {len(neg)} entries; give 1 or {len(prompts)} (one per prompt).")
        for name in ("width", "height", "frames", "steps", "fps", "max_sequence_length", "vae_chunk_frames"):
            check_positive_int(name, getattr(self, name))
        check_seed(self.seed)
        check_guidance(self.guidance)
        if self.guidance_2 is not None:
            check_guidance(self.guidance_2)
        from ..sampling import available_samplers

        if self.sampler not in available_samplers():
            valid = ", ".join(available_samplers())
            raise ValueError(f"sampler={self.sampler!r} is unknown; valid samplers: {valid}.")
        check_shift(self.shift)
        check_eta(self.eta)

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def size(self, family: FamilySpec) -> dict[str, int]:
        """width, height, frames with the family's defaults filled in (not yet checked)."""
        default = DEFAULT_SIZES[family.name]
        return {k: getattr(self, k) if getattr(self, k) is not None else default[k] for k in default}


@dataclass
class GenerationResult:
    """Frames [B, F, H, W, C] float32 in [0, 1] on the CPU (None when decoding was skipped), the final latents in
    the family's layout (Wan [B, C, T, H, W], CogVideoX [B, T, C, H, W]), and what was run."""

    frames: torch.Tensor | None
    latents: torch.Tensor
    fps: int
    seed: int
    timesteps: list[float]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
