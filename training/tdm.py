"""The maths of BLADE's sparsity-aware TDM distillation (arXiv 2508.10774, Sec. 3.3; TDM arXiv 2503.06674).

One training iteration, per sample of the batch:
1. Rollout (no grad, sparse student): from noise at t = 999 the student visits 999, 874, ..., 124 with the TDM
   update x_next = add_noise(x0, eta eps + sqrt(1 - eta^2) z, t_next) (the ``tdm`` sampler of blade_ops).
2. Draw i in 1..K: t_g = (T/K) i - 1, t_mid = t_g - T/K + 1. From the rollout state at t_g the student predicts
   (x0, eps); re-noise with eta to t_mid, then diffuse forward to t ~ U[t_mid, 980) with the exact transition
   kernel x_t = (a_t / a_mid) x_mid + sqrt(s_t^2 - (a_t s_mid / a_mid)^2) z.
3. Fake-score loss (trains the fake score's LoRA): Wan MSE(v_fake, (x_t - x0) / sigma_t); CogVideoX
   SNR-weighted x0 MSE with weight 1 / (1 - alphabar_t); optional pull towards the teacher (lambda_reg).
4. Student loss (trains the student's LoRA, gradient through the student's x0 at t_g): target
   x0 + (x0_teacher_cfg - x0_fake), detached; pseudo-Huber mean(sqrt((x0 - target)^2 + c^2) - c); CogVideoX divides
   by mean|x0 - x0_teacher_cfg| per sample, clamped to <= 5.
sigma(t) is exact (blade_ops.sampling.parameterization), never a table look-up: the reference's table fell back to
sigma ~ 0.003 for 268 of Wan's integer timesteps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from blade_ops.sampling import FlowMatching, Parameterization, VPrediction

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, ...], t [B]) -> model output like x_t


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def alpha_sigma(param: Parameterization, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales (a_t, s_t) of x_t = a_t x0 + s_t eps, float64, shape of ``t``."""
    if isinstance(param, FlowMatching):
        sigma = param.sigma(t)
        return 1.0 - sigma, sigma
    if isinstance(param, VPrediction):
        a = param.alpha_bar(t)
        return a.sqrt(), (1.0 - a).sqrt()
    raise ValueError(f"Unknown parameterization {type(param).__name__}; valid: FlowMatching, VPrediction.")


def diffuse(
    param: Parameterization, x_s: torch.Tensor, s: torch.Tensor, t: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """Forward transition q(x_t | x_s) for t >= s (per sample [B]): a_t/a_s x_s + sqrt(s_t^2 - (a_t s_s/a_s)^2) z."""
    a_s, s_s = alpha_sigma(param, s)
    a_t, s_t = alpha_sigma(param, t)
    ratio = a_t / a_s
    extra = (s_t**2 - (ratio * s_s) ** 2).clamp_min(0.0).sqrt()
    return _expand(ratio, x_s) * x_s + _expand(extra, x_s) * z


def rollout_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """[K] long: T-1, T-1-T/K, ..., T/K-1 (999, 874, ..., 124 for K = 8)."""
    stride = num_train_timesteps // num_steps
    return torch.tensor([num_train_timesteps - 1 - stride * k for k in range(num_steps)], dtype=torch.long)


@torch.no_grad()
def rollout(
    predict: Predict, noise: torch.Tensor, sampler, generator: torch.Generator | list[torch.Generator] | None
) -> torch.Tensor:
    """Student states at the sampler's K timesteps: [K, B, ...], states[0] = noise at t = 999.

    ``sampler`` is a fresh blade_ops ``tdm`` sampler (it owns the x0/eps conversion and the eta update);
    ``generator`` may be one generator per sample.
    """
    states = [noise]
    x = noise
    batch = noise.shape[0]
    for i in range(len(sampler.timesteps) - 1):
        t = sampler.timesteps[i].expand(batch).to(noise.device)
        x = sampler.step(i, predict(x, t).float(), x.float(), generator).to(noise.dtype)
        states.append(x)
    return torch.stack(states)


def pick_states(states: torch.Tensor, timesteps: torch.Tensor, t_g: torch.Tensor) -> torch.Tensor:
    """The rollout state of each sample at its own t_g: states [K, B, ...], t_g [B] -> [B, ...]."""
    index = torch.stack([(timesteps.to(t_g.device) == t).nonzero()[0, 0] for t in t_g])
    return states[index.to(states.device), torch.arange(states.shape[1], device=states.device)]


def draw_training_timesteps(
    generators: list[torch.Generator], num_steps: int, num_train_timesteps: int, max_timestep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t_g, t_mid, t) per sample, long [B] each, sample b drawn from ``generators[b]`` (CPU).

    i ~ U{1..K}; t_g = (T/K) i - 1; t_mid = t_g - T/K + 1; t ~ U[max(t_mid, 1), max_timestep). t >= 1 keeps
    sigma_t > 0 (the Wan target divides by it; exact sigma(0) is 0).
    """
    stride = num_train_timesteps // num_steps
    i = torch.cat([torch.randint(1, num_steps + 1, (1,), generator=g) for g in generators])
    t_g = i * stride - 1
    t_mid = t_g - stride + 1
    low = t_mid.clamp_min(1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators])
    t = (low + (u * (max_timestep - low)).floor().long()).clamp_max(max_timestep - 1)
    return t_g, t_mid, t


def renoise_and_diffuse(
    param: Parameterization,
    x0: torch.Tensor,
    eps: torch.Tensor,
    t_mid: torch.Tensor,
    t: torch.Tensor,
    eta: float,
    z_mid: torch.Tensor,
    z_t: torch.Tensor,
) -> torch.Tensor:
    """x_t of the score models: eta re-noising of (x0, eps) to t_mid, then the forward kernel from t_mid to t."""
    x_mid = param.add_noise(x0, eta * eps + math.sqrt(1.0 - eta**2) * z_mid, t_mid)
    return diffuse(param, x_mid, t_mid, t, z_t)


def fake_score_loss(
    param: Parameterization,
    out_fake: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    x0: torch.Tensor,
    out_teacher: torch.Tensor | None = None,
    lambda_reg: float = 0.0,
) -> torch.Tensor:
    """Denoising loss of the fake score on the student's distribution (x0 detached).

    Flow matching (Wan): MSE(v_fake, (x_t - x0) / sigma_t) [+ lambda MSE(v_fake, v_teacher)].
    v-prediction (CogVideoX): mean(w (x0_fake - x0)^2), w = 1 / (1 - alphabar_t) [+ lambda same vs the teacher].
    """
    out_fake = out_fake.float()
    x_t, x0 = x_t.float(), x0.float()
    if isinstance(param, FlowMatching):
        sigma = _expand(param.sigma(t), x_t)
        loss = (out_fake - (x_t - x0) / sigma).pow(2).mean()
        if out_teacher is not None and lambda_reg > 0:
            loss = loss + lambda_reg * (out_fake - out_teacher.float()).pow(2).mean()
        return loss
    weight = _expand(1.0 / (1.0 - param.alpha_bar(t)), x_t)
    x0_fake, _ = param.to_x0_eps(x_t, out_fake, t)
    loss = (weight * (x0_fake - x0).pow(2)).mean()
    if out_teacher is not None and lambda_reg > 0:
        x0_teacher, _ = param.to_x0_eps(x_t, out_teacher.float(), t)
        loss = loss + lambda_reg * (weight * (x0_fake - x0_teacher).pow(2)).mean()
    return loss


def huber_c(latent_shape: torch.Size | tuple[int, ...], scale: float = 1e-3) -> float:
    """Pseudo-Huber c for one sample's latent: scale * sqrt(numel / (64 * 64 * 4)) (the reference's rule)."""
    return scale * math.sqrt(math.prod(latent_shape) / (64 * 64 * 4))


def student_loss(
    x0: torch.Tensor,
    x0_teacher: torch.Tensor,
    x0_fake: torch.Tensor,
    c: float,
    normalize: bool = False,
) -> torch.Tensor:
    """Pseudo-Huber distance of the student's x0 [B, ...] to x0 + (x0_teacher_cfg - x0_fake), target detached.

    ``normalize`` (CogVideoX): divide each sample's loss by mean|x0 - x0_teacher|, clamped to <= 5.
    """
    x0 = x0.float()
    target = (x0 + x0_teacher.float() - x0_fake.float()).detach()
    per_elem = torch.sqrt((x0 - target) ** 2 + c**2) - c
    if normalize:
        dims = tuple(range(1, x0.ndim))
        scale = (x0.detach() - x0_teacher.float()).abs().mean(dim=dims, keepdim=True).clamp(max=5.0)
        per_elem = per_elem / scale.clamp_min(1e-8)
    return per_elem.mean()
