"""Model families the pack supports and the video geometry each accepts.

Geometry facts (VAE strides, patch sizes, frame rules) come from the Wan2.1 and CogVideoX model cards and
BLADE's reference settings (arXiv 2508.10774, Sec. 4.1). Every shape check in the pack goes through here so
that one message tells the user which sizes are valid.
"""

from __future__ import annotations

from dataclasses import dataclass

WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy "
    "background, three legs, many people in the background, walking backwards"
)


@dataclass(frozen=True)
class FamilySpec:
    """What differs between the supported families at the level of video geometry and text."""

    name: str
    vae_temporal_stride: int  # frames per latent frame after the first
    frame_step: int  # valid frame counts are frame_step*k + 1 (see check_video_size)
    vae_spatial_stride: int  # pixels per latent pixel
    patch_t: int
    patch_hw: int
    latent_channels: int
    max_text_tokens: int  # tokenizer max_length the model was trained with
    fps: int  # frame rate the model was trained for (REFERENCE.md: Wan 16, CogVideoX 8)
    default_negative_prompt: str
    text_in_self_attention: bool  # CogVideoX concatenates text tokens into self-attention

    @property
    def pixel_multiple(self) -> int:
        """Width and height must be multiples of this (VAE stride x patch size)."""
        return self.vae_spatial_stride * self.patch_hw

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // self.vae_temporal_stride + 1


WAN = FamilySpec(
    name="wan",
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
)

COGVIDEOX = FamilySpec(
    name="cogvideox",
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
)

FAMILIES: dict[str, FamilySpec] = {f.name: f for f in (WAN, COGVIDEOX)}


def get_family(name: str) -> FamilySpec:
    """Look a family up by name ("wan" or "cogvideox")."""
    key = name.lower().replace("-", "").replace("_", "")
    if key.startswith("wan"):
        key = "wan"
    elif key.startswith("cogvideo"):
        key = "cogvideox"
    if key not in FAMILIES:
        raise ValueError(f"Unknown model family {name!r}; valid families: {', '.join(FAMILIES)}.")
    return FAMILIES[key]


def _nearest(value: int, ok, step: int) -> list[int]:
    below = value - (value - ok) % step if value >= ok else ok
    return sorted({max(ok, below), max(ok, below) + step})


def check_video_size(family: FamilySpec, *, width: int, height: int, frames: int) -> None:
    """Raise ValueError naming every bad dimension and the nearest valid values.

    Frames must be 4k+1 for Wan (the causal VAE keeps the first frame and compresses the rest by 4) and 8k+1 for
    CogVideoX (see ``frame_step``); width and height must be multiples of 16 (VAE stride 8 x patch 2). Any such
    size works: nothing is tied to 480x832.
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
