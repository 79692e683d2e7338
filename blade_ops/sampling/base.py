"""The sampler interface the denoising loop drives, and the registry samplers are chosen from by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

import torch

from ..families import FamilySpec
from .parameterization import FlowMatching, Parameterization, VPrediction


class Sampler(ABC):
    """One sampling run's schedule and update rule; build a fresh one per run (solvers keep history).

    The loop calls ``step(i, model_output, latents, generator)`` once per entry of ``timesteps`` with the
    (guided) model output at ``timesteps[i]`` and gets the latents for the next step back.
    """

    name: ClassVar[str]
    default_steps: ClassVar[int]
    timesteps: torch.Tensor  # [steps] model timesteps, in the order they are visited

    def __init__(self, family: FamilySpec, scheduler_config: dict | None = None, *, steps: int | None = None):
        if steps is None:
            steps = self.default_steps_for(family)
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
            raise ValueError(f"steps={steps!r} is invalid for sampler {self.name!r}; use an integer in 1..1000.")
        self.family = family
        self.scheduler_config = scheduler_config
        self.steps = steps

    @classmethod
    def default_steps_for(cls, family: FamilySpec) -> int:
        """Steps when a run names none (the sampler's own default; the baseline takes the family's)."""
        return cls.default_steps

    @property
    def init_noise_sigma(self) -> float:
        """Scale of the initial Gaussian noise (1.0 for both families)."""
        return 1.0

    @abstractmethod
    def step(
        self, i: int, model_output: torch.Tensor, latents: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Latents after step i; model_output and latents share the family's latent layout."""

    def parameterization(self) -> Parameterization:
        """The family's x0/eps conversion (needed by samplers that re-noise, and by training)."""
        if self.family.flow_matching:
            return FlowMatching(int((self.scheduler_config or {}).get("num_train_timesteps", 1000)))
        from .schedulers import build_scheduler

        return VPrediction(build_scheduler(self.family, self.scheduler_config).alphas_cumprod.clone())

    def describe(self) -> str:
        return f"{self.name} ({self.steps} steps, timesteps {[int(t) for t in self.timesteps]})"


SAMPLERS: dict[str, type[Sampler]] = {}


def register_sampler(name: str) -> Callable[[type[Sampler]], type[Sampler]]:
    """Class decorator adding a sampler to the registry under ``name``."""

    def add(cls: type[Sampler]) -> type[Sampler]:
        if name in SAMPLERS:
            raise ValueError(f"A sampler named {name!r} is already registered ({SAMPLERS[name].__name__}).")
        cls.name = name
        SAMPLERS[name] = cls
        return cls

    return add


def available_samplers() -> list[str]:
    return sorted(SAMPLERS)


def make_sampler(
    name: str,
    family: FamilySpec,
    scheduler_config: dict | None = None,
    *,
    steps: int | None = None,
    shift: float | None = None,
    eta: float | None = None,
) -> Sampler:
    """Build the sampler registered as ``name`` for one run. Unset options take the sampler's defaults."""
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; valid samplers: {', '.join(available_samplers())}.")
    return SAMPLERS[name](family, scheduler_config, steps=steps, shift=shift, eta=eta)
