"""ASA: adaptive block-sparse attention for video DiTs (BLADE, arXiv 2508.10774, Sec. 3.2).

Public API::

    handle = install_asa(transformer, ASAConfig.for_family(WAN), backend="auto")
    handle.set_step(i)            # before each sampling step (dense for i < config.dense_steps)
    handle.layer_density()        # {layer: kept-block fraction} of the last forward
    remove_asa(transformer)       # original processors back

``asa_attention`` is the framework-free entry point (tensors, grid, text count, config in; output out).
"""

from .asa import ASAStats, asa_attention
from .backends import available_backends, get_backend, register, resolve_backend
from .config import ASAConfig
from .curve import curve_permutation, gilbert3d
from .processors import ASAHandle, get_asa_handle, install_asa, remove_asa

__all__ = [
    "ASAConfig", "ASAHandle", "ASAStats", "asa_attention", "install_asa", "remove_asa", "get_asa_handle",
    "available_backends", "get_backend", "register", "resolve_backend", "curve_permutation", "gilbert3d",
]
