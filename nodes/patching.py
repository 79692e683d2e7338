"""Apply a BladeModel's recorded patches (ASA, LoRAs) to the shared transformer for one run, then take them off.

The order and the ASA settings are decided by :func:`blade_ops.prepare.prepare_transformer`, the same function the
command line and training use: ASA first, then the LoRAs in chain order, with the ASA settings a BLADE LoRA
records unless the BLADE ASA node asks otherwise. Everything is removed again on the way out, also when the run
fails or is cancelled, so the loaded model stays usable and other branches of the graph see it unpatched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .types import BladeModel


@contextmanager
def patched(model: BladeModel) -> Iterator[object]:
    """Yield ASA's handle (or None) while the transformer carries ``model``'s patches."""
    from ..blade_ops.prepare import prepared_transformer

    loras = [(patch.lora, patch.strength) for patch in model.loras]
    with prepared_transformer(model.bundle.transformer, asa=model.asa, loras=loras) as prepared:
        yield prepared.asa_handle
