"""Quality metric of the toy domain, computed on clips at the latent resolution [N, 3, T, S, S] in [-1, 1].

A small 3D CNN is trained on freshly rendered clips to read colour, shape and direction. Two numbers per sampler:
- prompt match: the fraction of samples whose colour, shape and direction the classifier reads as the prompt says;
- FD: Frechet distance between the classifier's penultimate features of the samples and of real clips of the same
  prompts (an FID for this domain; lower is better).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from .domain import COLOUR_NAMES, DIRECTION_NAMES, SHAPES, ToyGeometry, labels_of, random_batch, render

logger = logging.getLogger(__name__)


class ToyClassifier(nn.Module):
    """Colour / shape / direction heads on a 128-d clip feature."""

    def __init__(self, width: int = 32, feature_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv3d(3, w, 3, padding=1), nn.GELU(),
            nn.Conv3d(w, 2 * w, 3, stride=(1, 2, 2), padding=1), nn.GELU(),
            nn.Conv3d(2 * w, 4 * w, 3, stride=(1, 2, 2), padding=1), nn.GELU(),
            nn.Conv3d(4 * w, feature_dim, 3, stride=(2, 2, 2), padding=1), nn.GELU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )
        self.heads = nn.ModuleList(nn.Linear(feature_dim, n) for n in (len(COLOUR_NAMES), len(SHAPES),
                                                                         len(DIRECTION_NAMES)))

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        return self.body(clips)

    def forward(self, clips: torch.Tensor) -> list[torch.Tensor]:
        f = self.features(clips)
        return [head(f) for head in self.heads]


def train_classifier(geometry: ToyGeometry, *, steps: int, batch_size: int = 256, device: str = "cpu", seed: int = 1,
                     noise: float = 0.15) -> tuple[ToyClassifier, float]:
    """(classifier, accuracy on 2048 held-out clips). Light pixel noise keeps it robust to imperfect samples."""
    gen = torch.Generator().manual_seed(seed)
    model = ToyClassifier().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    start = time.perf_counter()
    for _ in range(steps):
        index, clips = random_batch(batch_size, geometry, gen, device)
        clips = clips + noise * torch.randn(clips.shape, generator=gen).to(device)
        loss = sum(nn.functional.cross_entropy(o, y) for o, y in zip(model(clips), labels_of(index), strict=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    index, clips = random_batch(2048, geometry, gen, device)
    accuracy = prompt_match(model, clips, index)
    logger.info("classifier: %d steps in %.0f s, real-clip prompt match %.4f", steps, time.perf_counter() - start,
                accuracy)
    return model, accuracy


@torch.no_grad()
def attribute_match(model: ToyClassifier, clips: torch.Tensor, index: torch.Tensor, chunk: int = 512) -> dict:
    """Fractions of clips whose colour, shape, direction, and all three ("prompt") read as prompt ``index`` says."""
    ok = []
    for s in range(0, len(clips), chunk):
        outs = model(clips[s : s + chunk].float())
        labels = labels_of(index[s : s + chunk])
        ok.append(torch.stack([o.argmax(-1) == y for o, y in zip(outs, labels, strict=True)]))  # [3, n]
    ok = torch.cat(ok, dim=1).float()
    return {"colour": float(ok[0].mean()), "shape": float(ok[1].mean()), "direction": float(ok[2].mean()),
            "prompt": float(ok.all(0).float().mean())}


def prompt_match(model: ToyClassifier, clips: torch.Tensor, index: torch.Tensor, chunk: int = 512) -> float:
    """Fraction of clips whose colour, shape and direction all match prompt ``index``."""
    return attribute_match(model, clips, index, chunk)["prompt"]


@torch.no_grad()
def features(model: ToyClassifier, clips: torch.Tensor, chunk: int = 512) -> np.ndarray:
    parts = [model.features(clips[s : s + chunk].float()) for s in range(0, len(clips), chunk)]
    return torch.cat(parts).cpu().double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^1/2) of two feature sets [N, D]."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr((C_a C_b)^1/2) = sum sqrt(eig(C_a^1/2 C_b C_a^1/2)), a symmetric PSD product: stable with eigh.
    w, v = np.linalg.eigh(ca)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = np.linalg.eigvalsh(root_a @ cb @ root_a)
    trace_root = np.sqrt(np.clip(mid, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * trace_root)


def reference_clips(index: torch.Tensor, geometry: ToyGeometry, seed: int = 1234) -> torch.Tensor:
    """Real clips for the same prompts as a set of samples (fresh positions, sizes and speeds)."""
    return render(index, geometry, torch.Generator().manual_seed(seed))
