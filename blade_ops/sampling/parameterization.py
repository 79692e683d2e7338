"""Convert a model output at timestep t into (x0, eps), and noise a clean sample to t, for both families.

BLADE's TDM rollout (arXiv 2508.10774, Sec. 3.2; TDM arXiv 2503.06674) moves between timesteps by predicting
x0 and eps, then re-noising: x_next = add_noise(x0, eta * eps + sqrt(1 - eta^2) * z, t_next). The sampler and
the training loop share these conversions.

- Wan2.1 is flow matching with x_t = (1 - sigma) x0 + sigma eps and a velocity output v = eps - x0, so
  x0 = x_t - sigma v and eps = x_t + (1 - sigma) v. The model is told t = sigma * num_train_timesteps (the shift
  only chooses which sigmas a schedule visits), hence sigma(t) = t / num_train_timesteps exactly. The reference
  looked sigma up in a 1000-entry shifted table and fell back to sigma ~ 0.003 for the 268 integer timesteps the
  table lacks; computing it avoids that defect.
- CogVideoX is v-prediction on alphas_cumprod a_t: x_t = sqrt(a) x0 + sqrt(1 - a) eps, v = sqrt(a) eps -
  sqrt(1 - a) x0, so x0 = sqrt(a) x_t - sqrt(1 - a) v and eps = sqrt(a) v + sqrt(1 - a) x_t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a [B] (or scalar) coefficient over a [B, ...] tensor."""
    values = values.to(device=like.device, dtype=like.dtype)
    if values.ndim == 0:
        return values
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class FlowMatching:
    """Wan2.1 flow matching; ``t`` is the timestep the model is given (0..num_train_timesteps)."""

    num_train_timesteps: int = 1000

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """Exact noise level of timestep t (float64 for exactness, any shape)."""
        return torch.as_tensor(t, dtype=torch.float64) / self.num_train_timesteps

    def to_x0_eps(
        self, x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t, v: [B, ...]; t: scalar or [B]. Returns (x0, eps), each like x_t."""
        s = _per_sample(self.sigma(t), x_t)
        return x_t - s * v, x_t + (1 - s) * v

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Noisy sample at t: (1 - sigma) x0 + sigma noise."""
        s = _per_sample(self.sigma(t), x0)
        return (1 - s) * x0 + s * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Training target for the model output: v = noise - x0."""
        return noise - x0


@dataclass(frozen=True)
class VPrediction:
    """CogVideoX v-prediction; ``alphas_cumprod`` [num_train_timesteps] indexed by integer timestep."""

    alphas_cumprod: torch.Tensor

    def alpha_bar(self, t: torch.Tensor | int) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long)
        if (t < 0).any() or (t >= len(self.alphas_cumprod)).any():
            raise ValueError(f"timestep {t.tolist()} outside 0..{len(self.alphas_cumprod) - 1}")
        return self.alphas_cumprod.to(torch.float64)[t]

    def to_x0_eps(
        self, x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t, v: [B, ...]; t: scalar or [B] integer timesteps. Returns (x0, eps), each like x_t."""
        a = _per_sample(self.alpha_bar(t), x_t)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        return sa * x_t - sb * v, sa * v + sb * x_t

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Noisy sample at t: sqrt(a) x0 + sqrt(1 - a) noise."""
        a = _per_sample(self.alpha_bar(t), x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Training target for the model output: v = sqrt(a) noise - sqrt(1 - a) x0."""
        a = _per_sample(self.alpha_bar(t), x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0


Parameterization = FlowMatching | VPrediction
