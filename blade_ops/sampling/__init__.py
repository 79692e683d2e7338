"""Samplers chosen by name (``baseline``, ``blade``, ``tdm``), their schedulers and x0/eps conversions."""

from . import samplers as _samplers  # noqa: F401  (registers the built-in samplers)
from .base import SAMPLERS, Sampler, available_samplers, make_sampler, register_sampler
from .parameterization import FlowMatching, Parameterization, VPrediction
from .samplers import flow_sigmas, flow_unipc_sample
from .schedulers import COGVIDEOX_SCHEDULER_DEFAULTS, WAN_SCHEDULER_DEFAULTS, build_scheduler

__all__ = [
    "SAMPLERS",
    "Sampler",
    "available_samplers",
    "make_sampler",
    "flow_sigmas",
    "flow_unipc_sample",
    "register_sampler",
    "FlowMatching",
    "Parameterization",
    "VPrediction",
    "build_scheduler",
    "WAN_SCHEDULER_DEFAULTS",
    "COGVIDEOX_SCHEDULER_DEFAULTS",
]
