"""Apply a BladeModel's recorded patches (ASA, LoRAs) to the shared transformer for one run, then take them off.

ASA goes in first, then the LoRAs, in chain order: the order BLADE distilled its LoRAs in. Everything is removed
again on the way out, also when the run fails or is cancelled, so the loaded model stays usable and other branches
of the graph see it unpatched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from .types import BladeModel

log = logging.getLogger(__name__)


@contextmanager
def patched(model: BladeModel) -> Iterator[object]:
    """Yield ASA's handle (or None) while the transformer carries ``model``'s patches."""
    transformer = model.bundle.transformer
    adapters: list[str] = []
    asa_installed = False
    handle = None
    try:
        if model.asa is not None:
            from ..blade_ops.attention import install_asa

            handle = install_asa(transformer, model.asa.config, model.asa.backend)
            asa_installed = True
        if model.loras:
            from ..blade_ops.lora import apply_lora

            for patch in model.loras:
                adapters.append(apply_lora(transformer, patch.lora, strength=patch.strength, merge=False))
        yield handle
    finally:
        if adapters:
            from ..blade_ops.lora import remove_lora

            for name in reversed(adapters):
                remove_lora(transformer, name)
        if asa_installed:
            from ..blade_ops.attention import remove_asa

            remove_asa(transformer)
