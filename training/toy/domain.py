"""The toy video domain: one coloured shape moving in a straight line and bouncing off the walls of a black frame.

Each clip is described by "a {colour} {shape} moving {direction}" (9 x 3 x 4 = 108 prompts, words from
blade_ops.models.tiny.TINY_VOCAB_WORDS). Clips are rendered directly at the latent resolution of the toy "pixel"
VAE (one value per 8x8 pixel cell and per group of 4 frames, see blade_ops/models/pixel_vae.py), so the VAE round
trip is exact and the whole quality budget goes to the transformer. Rendering is vectorised torch, on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

COLOURS = {
    "red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.2), "blue": (0.15, 0.3, 1.0), "yellow": (1.0, 0.95, 0.1),
    "white": (1.0, 1.0, 1.0), "cyan": (0.1, 0.95, 0.95), "magenta": (0.95, 0.1, 0.9), "orange": (1.0, 0.55, 0.05),
    "purple": (0.55, 0.15, 0.85),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
COLOUR_NAMES = tuple(COLOURS)
DIRECTION_NAMES = tuple(DIRECTIONS)


@dataclass(frozen=True)
class ToyGeometry:
    """Clip size at the latent resolution: ``frames`` latent frames of ``size`` x ``size`` cells."""

    frames: int = 5  # latent frames; the video has 4 (frames - 1) + 1 frames
    size: int = 32  # latent cells per side; the video is 8 * size pixels wide
    radius: tuple[float, float] = (3.5, 5.5)  # shape half-size range, in cells
    speed: tuple[float, float] = (2.0, 3.0)  # cells per latent frame

    @property
    def video_frames(self) -> int:
        return 4 * (self.frames - 1) + 1

    @property
    def video_size(self) -> int:
        return 8 * self.size


def all_prompts() -> list[str]:
    """The 108 prompts, in label order: index = (colour * 3 + shape) * 4 + direction."""
    return [f"a {c} {s} moving {d}" for c in COLOUR_NAMES for s in SHAPES for d in DIRECTION_NAMES]


def labels_of(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(colour, shape, direction) label tensors of prompt indices."""
    nd, ns = len(DIRECTION_NAMES), len(SHAPES)
    return index // (ns * nd), (index // nd) % ns, index % nd


def _bounce(start: torch.Tensor, step: torch.Tensor, k: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
    """Position after k steps with reflection at [low, high] (triangle wave)."""
    span = (high - low).clamp_min(1e-6)
    y = torch.remainder(start - low + step * k, 2 * span)
    return low + torch.where(y > span, 2 * span - y, y)


def render(
    prompt_index: torch.Tensor, geometry: ToyGeometry = ToyGeometry(), generator: torch.Generator | None = None
) -> torch.Tensor:
    """Clips [N, 3, T, S, S] in [-1, 1] for prompt indices [N] (random size, speed and start per clip)."""
    device = prompt_index.device
    n, g = prompt_index.shape[0], geometry
    colour, shape, direction = labels_of(prompt_index)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(n, generator=generator)).to(device)

    radius = uniform(*g.radius)
    speed = uniform(*g.speed)
    low, high = radius, g.size - 1 - radius
    cx = low + (high - low) * uniform(0.0, 1.0)
    cy = low + (high - low) * uniform(0.0, 1.0)
    dirs = torch.tensor(list(DIRECTIONS.values()), device=device)[direction]
    k = torch.arange(g.frames, device=device, dtype=torch.float32)[None, :]  # [1, T]
    px = _bounce(cx[:, None], (dirs[:, 0] * speed)[:, None], k, low[:, None], high[:, None])  # [N, T]
    py = _bounce(cy[:, None], (dirs[:, 1] * speed)[:, None], k, low[:, None], high[:, None])
    coords = torch.arange(g.size, device=device, dtype=torch.float32)
    dx = coords[None, None, None, :] - px[:, :, None, None]  # [N, T, 1, S]
    dy = coords[None, None, :, None] - py[:, :, None, None]  # [N, T, S, 1]
    r = radius[:, None, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= 0.85 * r) & (dy.abs() <= 0.85 * r)
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= 0.6 * (dy + r))
    masks = torch.stack([circle, square, triangle], dim=1)  # [N, 3, T, S, S]
    mask = masks[torch.arange(n, device=device), shape].float()  # [N, T, S, S]
    rgb = torch.tensor(list(COLOURS.values()), device=device)[colour]  # [N, 3]
    clip = mask[:, None] * rgb[:, :, None, None, None]  # [N, 3, T, S, S] in [0, 1]
    return clip * 2 - 1


def random_batch(
    n: int, geometry: ToyGeometry = ToyGeometry(), generator: torch.Generator | None = None, device="cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt indices [n], clips [n, 3, T, S, S]) with prompts uniform over all 108."""
    index = torch.randint(0, len(all_prompts()), (n,), generator=generator).to(device)
    return index, render(index, geometry, generator)
