"""The registered samplers: ``baseline`` (the families' 50-step solvers), ``blade`` (the 8-step schedule the
released BLADE LoRAs expect) and ``tdm`` (the stochastic rollout BLADE trains with).

REFERENCE.md, "Inference with a BLADE LoRA" and "Baselines":
- Wan: UniPC flow matching, flow_shift 3.0 -> 8 steps visit about [999, 954, 900, 833, 750, 643, 500, 301].
- CogVideoX: CogVideoXDPMScheduler, trailing spacing -> 8 steps visit [999, 874, ..., 124].
- TDM (Sec. 3.2): timesteps 999 - 125k, x_next = add_noise(x0, eta * eps + sqrt(1 - eta^2) z, t_next).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..families import FamilySpec
from .base import Sampler, register_sampler
from .schedulers import build_scheduler


class SchedulerSampler(Sampler):
    """Steps a diffusers scheduler: UniPC (Wan) or CogVideoX's DPM-Solver++ (CogVideoX).

    ``shift`` is Wan's flow shift (it decides which sigmas the schedule visits); CogVideoX has none.
    """

    default_steps = 50
    blade_schedule = False  # True: the timestep spacing BLADE distilled for (the family adapter's), else the model's

    def __init__(
        self,
        family: FamilySpec,
        scheduler_config: dict | None = None,
        *,
        steps: int | None = None,
        shift: float | None = None,
        eta: float | None = None,
    ):
        super().__init__(family, scheduler_config, steps=steps)
        if eta is not None:
            raise ValueError(f"eta={eta} applies to the 'tdm' sampler only, not to {self.name!r}.")
        overrides: dict = {}
        if shift is not None:
            if not family.flow_matching:
                raise ValueError(f"shift={shift} applies to flow-matching schedules (Wan) only, not {family.name}.")
            if not shift > 0:
                raise ValueError(f"shift={shift} must be positive (Wan uses 3.0 at 480p, 5.0 at 720p).")
            overrides["flow_shift"] = float(shift)
        if self.blade_schedule and family.blade_timestep_spacing is not None:
            overrides["timestep_spacing"] = family.blade_timestep_spacing
        self.scheduler = build_scheduler(family, scheduler_config, overrides=overrides)
        self.scheduler.set_timesteps(self.steps, device="cpu")
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        self.timesteps = self.scheduler.timesteps.clone()
        self._previous_x0: torch.Tensor | None = None

    @property
    def init_noise_sigma(self) -> float:
        return float(self.scheduler.init_noise_sigma)

    def step(
        self, i: int, model_output: torch.Tensor, latents: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        t = self.timesteps[i]
        if self.family.flow_matching:
            return self.scheduler.step(model_output, t, latents, return_dict=False)[0]
        # CogVideoX DPM-Solver++(2M) needs the previous x0 and timestep, and draws fresh noise each step.
        t_back = self.timesteps[i - 1] if i > 0 else None
        latents, self._previous_x0 = self.scheduler.step(
            model_output, self._previous_x0, t, t_back, latents, generator=generator, return_dict=False
        )
        return latents


@register_sampler("baseline")
class BaselineSampler(SchedulerSampler):
    """The family's dense solver with the model's own scheduler settings (use with CFG), for the family's number of
    steps (50; Wan2.2 A14B 40)."""

    default_steps = 50

    @classmethod
    def default_steps_for(cls, family: FamilySpec) -> int:
        return family.baseline_steps


@register_sampler("blade")
class BladeSampler(SchedulerSampler):
    """What BLADE LoRAs were distilled for: 8 steps, Wan UniPC shift 3.0, CogVideoX DPM trailing (no CFG)."""

    default_steps = 8
    blade_schedule = True


@register_sampler("tdm")
class TDMSampler(Sampler):
    """Stochastic TDM rollout: timesteps 999 - (1000 // steps) k; the last step returns the predicted x0.

    From x_t the model output gives (x0, eps); the next state is add_noise(x0, eta eps + sqrt(1 - eta^2) z,
    t_next) with z drawn from the run's generator. eta = 1 is deterministic DDIM-like, eta = 0 fully fresh noise.
    """

    default_steps = 8
    default_eta = 0.9  # BLADE's training value

    def __init__(
        self,
        family: FamilySpec,
        scheduler_config: dict | None = None,
        *,
        steps: int | None = None,
        shift: float | None = None,
        eta: float | None = None,
    ):
        super().__init__(family, scheduler_config, steps=steps)
        if shift is not None:
            raise ValueError(
                f"shift={shift} does not apply to 'tdm': its timesteps are fixed at 999 - (1000 // steps) k and "
                "sigma(t) = t / 1000 exactly."
            )
        self.eta = self.default_eta if eta is None else float(eta)
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta={eta} must lie in [0, 1] (BLADE trains with 0.9).")
        total = int((scheduler_config or {}).get("num_train_timesteps", 1000))
        stride = total // self.steps
        self.timesteps = torch.tensor([total - 1 - stride * k for k in range(self.steps)], dtype=torch.long)
        self.param = self.parameterization()

    def step(
        self, i: int, model_output: torch.Tensor, latents: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        x0, eps = self.param.to_x0_eps(latents.float(), model_output.float(), self.timesteps[i])
        if i + 1 == len(self.timesteps):
            return x0
        z = randn_tensor(eps.shape, generator=generator, device=eps.device, dtype=eps.dtype)
        noise = self.eta * eps + math.sqrt(1.0 - self.eta**2) * z
        return self.param.add_noise(x0, noise, self.timesteps[i + 1])


def flow_sigmas(
    name: str, family: FamilySpec, *, steps: int | None = None, shift: float | None = None
) -> torch.Tensor:
    """The sigmas a scheduler sampler visits, with the final 0: [steps + 1] float32 on the CPU.

    For Wan's flow matching these are what ComfyUI's samplers take as SIGMAS: core's Wan maps sigma to the model's
    timestep as sigma * 1000, so sampling with them visits this sampler's timesteps.
    """
    from .base import make_sampler

    sampler = make_sampler(name, family, steps=steps, shift=shift)
    sigmas = getattr(getattr(sampler, "scheduler", None), "sigmas", None)
    if sigmas is None or not getattr(sampler.scheduler.config, "use_flow_sigmas", False):
        raise ValueError(f"Sampler {name!r} for {family.name} has no flow-matching sigma schedule.")
    return sigmas.detach().float().cpu().clone()


def flow_unipc_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """The ``blade`` sampler's solver (diffusers' UniPC, bh2, order 2, lower order at the end) over given flow sigmas.

    ``velocity(x, t)`` returns the model's flow velocity at timestep ``t`` ([1] float tensor); ``x`` is the start at
    ``sigmas[0]``; ``sigmas`` decrease and end in 0. As in the pack's sampler, the model is told the integer
    timestep int(sigma * 1000) while the solver steps with the exact sigmas. This lets a caller with its own model
    wrapper (ComfyUI's samplers) step exactly as the pack does: ComfyUI's own uni_pc_bh2 is a third-order UniPC
    and tells the model sigma * 1000 unrounded.
    """
    from ..families import WAN  # flow matching is Wan's: the solver's config comes from its adapter

    sigmas = sigmas.detach().float().cpu()
    decreasing = sigmas.dim() == 1 and sigmas.numel() >= 2 and bool((sigmas[1:] < sigmas[:-1]).all())
    if not decreasing or float(sigmas[-1]) != 0.0:
        raise ValueError(f"sigmas must decrease strictly and end in 0; got {sigmas.tolist()}.")
    steps = sigmas.numel() - 1
    scheduler = build_scheduler(WAN)
    scheduler.set_timesteps(steps, device="cpu")
    scheduler.sigmas = sigmas.clone()
    scheduler.timesteps = (sigmas[:-1] * scheduler.config.num_train_timesteps).to(torch.int64)
    if bool((scheduler.timesteps == 0).any()):
        raise ValueError(
            f"sigmas {sigmas.tolist()} fall below 1/1000 before the final 0: no timestep to show the model."
        )
    scheduler.set_begin_index(0)
    for i in range(steps):
        t = scheduler.timesteps[i]
        v = velocity(x, t.reshape(1).float())
        x = scheduler.step(v.to(x.dtype), t, x, return_dict=False)[0]
        if on_step is not None:
            on_step(i, x)
    return x
