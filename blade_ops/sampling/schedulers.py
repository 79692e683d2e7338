"""Build the diffusers schedulers the samplers step with, from a model's scheduler config or shipped defaults.

The defaults are the stock configs of Wan2.1-T2V-1.3B (UniPC, flow matching, shift 3.0) and CogVideoX-5B
(v-prediction, scaled-linear betas rescaled to zero terminal SNR, trailing spacing), so a model loaded from a
single file without a scheduler folder samples exactly as the diffusers folder would.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from ..families import COGVIDEOX, WAN, FamilySpec

logger = logging.getLogger(__name__)

WAN_SCHEDULER_DEFAULTS: dict[str, Any] = {k: v for k, v in WAN.scheduler_defaults.items() if k != "_class_name"}
COGVIDEOX_SCHEDULER_DEFAULTS: dict[str, Any] = {
    k: v for k, v in COGVIDEOX.scheduler_defaults.items() if k != "_class_name"
}


def _accepted(cls, config: dict[str, Any]) -> dict[str, Any]:
    """Keep only the keys ``cls.__init__`` takes (configs of sibling classes carry extra keys)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in params}


def build_scheduler(
    family: FamilySpec, scheduler_config: dict | None = None, *, overrides: dict[str, Any] | None = None
):
    """A fresh scheduler of ``family``'s class (its adapter's ``scheduler_defaults``): Wan -> UniPC flow matching,
    CogVideoX -> CogVideoXDPMScheduler.

    ``scheduler_config`` (the model folder's scheduler_config.json, any class) is laid over the shipped defaults;
    ``overrides`` (e.g. flow_shift, timestep_spacing) are laid over both.
    """
    import diffusers

    defaults = dict(family.scheduler_defaults)
    cls = getattr(diffusers, defaults.pop("_class_name"))
    config = dict(defaults)
    foreign = scheduler_config and scheduler_config.get("_class_name", cls.__name__) != cls.__name__
    if family.flow_matching and foreign:
        # e.g. FlowMatchEulerDiscreteScheduler beside UniPC: keep only what both describe the same way (the DDIM
        # config CogVideoX folders ship describes the same betas, so it is laid over the DPM defaults whole)
        scheduler_config = {k: scheduler_config[k] for k in ("num_train_timesteps", "shift") if k in scheduler_config}
        if "shift" in scheduler_config:
            scheduler_config["flow_shift"] = scheduler_config.pop("shift")
    config.update(_accepted(cls, scheduler_config or {}))
    config.update(overrides or {})
    logger.debug("Building %s with %s", cls.__name__, config)
    return cls(**_accepted(cls, config))
