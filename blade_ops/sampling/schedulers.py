"""Build the diffusers schedulers the samplers step with, from a model's scheduler config or shipped defaults.

The defaults are the stock configs of Wan2.1-T2V-1.3B (UniPC, flow matching, shift 3.0) and CogVideoX-5B
(v-prediction, scaled-linear betas rescaled to zero terminal SNR, trailing spacing), so a model loaded from a
single file without a scheduler folder samples exactly as the diffusers folder would.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from ..families import FamilySpec

logger = logging.getLogger(__name__)

WAN_SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "solver_order": 2,
    "solver_type": "bh2",
    "predict_x0": True,
    "lower_order_final": True,
    "final_sigmas_type": "zero",
    "timestep_spacing": "linspace",
}

COGVIDEOX_SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "snr_shift_scale": 1.0,  # CogVideoX-5B; the 2B model uses 3.0 and ships it in its scheduler config
    "set_alpha_to_one": True,
    "clip_sample": False,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}


def _accepted(cls, config: dict[str, Any]) -> dict[str, Any]:
    """Keep only the keys ``cls.__init__`` takes (configs of sibling classes carry extra keys)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in params}


def build_scheduler(
    family: FamilySpec, scheduler_config: dict | None = None, *, overrides: dict[str, Any] | None = None
):
    """A fresh scheduler for ``family``: Wan -> UniPCMultistepScheduler, CogVideoX -> CogVideoXDPMScheduler.

    ``scheduler_config`` (the model folder's scheduler_config.json, any class) is laid over the shipped defaults;
    ``overrides`` (e.g. flow_shift, timestep_spacing) are laid over both.
    """
    from diffusers import CogVideoXDPMScheduler, UniPCMultistepScheduler

    if family.name == "wan":
        cls, config = UniPCMultistepScheduler, dict(WAN_SCHEDULER_DEFAULTS)
        if scheduler_config and scheduler_config.get("_class_name", "UniPCMultistepScheduler") != cls.__name__:
            # e.g. FlowMatchEulerDiscreteScheduler: keep only what both describe the same way
            scheduler_config = {
                k: scheduler_config[k] for k in ("num_train_timesteps", "shift") if k in scheduler_config
            }
            if "shift" in scheduler_config:
                scheduler_config["flow_shift"] = scheduler_config.pop("shift")
    elif family.name == "cogvideox":
        cls, config = CogVideoXDPMScheduler, dict(COGVIDEOX_SCHEDULER_DEFAULTS)
    else:
        raise ValueError(f"No scheduler for family {family.name!r}; valid families: 'wan', 'cogvideox'.")
    config.update(_accepted(cls, scheduler_config or {}))
    config.update(overrides or {})
    logger.debug("Building %s with %s", cls.__name__, config)
    return cls(**_accepted(cls, config))
