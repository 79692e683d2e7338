"""The toy video domain: one coloured shape moving in a straight line across a black frame.

The shape never reaches a wall: its start is drawn so that the whole path of the clip stays inside the frame, so it
moves in the named direction in every frame and the prompt's direction is the clip's net motion. (With bounces,
about half of the clips reversed within their 5 latent frames and a quarter moved against their prompt on net,
which left direction ambiguous for the model and for the metric alike.)

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


def _uniform(n: int, lo, hi, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """[n] uniform in [lo, hi), drawn on the generator's device (a CUDA generator keeps the data on the GPU)."""
    where = generator.device if generator is not None else device
    return (lo + (hi - lo) * torch.rand(n, generator=generator, device=where)).to(device)


def render(
    prompt_index: torch.Tensor, geometry: ToyGeometry = ToyGeometry(), generator: torch.Generator | None = None
) -> torch.Tensor:
    """Clips [N, 3, T, S, S] in [-1, 1] for prompt indices [N] (random size, speed and start per clip)."""
    device = prompt_index.device
    n, g = prompt_index.shape[0], geometry
    colour, shape, direction = labels_of(prompt_index)

    radius = _uniform(n, *g.radius, generator, device)
    low, high = radius, g.size - 1 - radius  # centre range that keeps the shape inside the frame
    travel_max = (high - low) / max(1, g.frames - 1)
    speed = torch.minimum(_uniform(n, *g.speed, generator, device), travel_max)  # never longer than the frame
    travel = speed * (g.frames - 1)
    dirs = torch.tensor(list(DIRECTIONS.values()), device=device)[direction]  # [N, 2]
    # Along the motion axis the start leaves room for the whole path; across it, any position in the frame.
    along = low + (high - low - travel) * _uniform(n, 0.0, 1.0, generator, device)
    across = low + (high - low) * _uniform(n, 0.0, 1.0, generator, device)
    sign = dirs.sum(1)  # +1 right/down, -1 left/up
    start = torch.where(sign > 0, along, high - (along - low))
    horizontal = dirs[:, 0] != 0
    cx, cy = torch.where(horizontal, start, across), torch.where(horizontal, across, start)
    k = torch.arange(g.frames, device=device, dtype=torch.float32)[None, :]  # [1, T]
    px = cx[:, None] + (dirs[:, 0] * speed)[:, None] * k  # [N, T]
    py = cy[:, None] + (dirs[:, 1] * speed)[:, None] * k
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
    """(prompt indices [n], clips [n, 3, T, S, S]) with prompts uniform over all 108, drawn on the generator's
    device and returned on ``device``."""
    where = generator.device if generator is not None else device
    index = torch.randint(0, len(all_prompts()), (n,), generator=generator, device=where).to(device)
    return index, render(index, geometry, generator)
