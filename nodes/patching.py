"""Apply a BladeModel's recorded patches (ASA, LoRAs) to the shared transformer for one run, then take them off.

The order and the ASA settings are decided by :func:`blade_ops.prepare.prepare_transformer`, the same function the
command line and training use: ASA first, then the LoRAs in chain order, with the ASA settings a BLADE LoRA
records unless the BLADE ASA node asks otherwise. Everything is removed again on the way out, also when the run
fails or is cancelled, so the loaded model stays usable and other branches of the graph see it unpatched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from .types import BladeModel


@contextmanager
def patched(model: BladeModel, *, fp8_linears: bool = False) -> Iterator[object]:
    """Yield ASA's handle on the first transformer (or None) while the transformers carry ``model``'s patches (and,
    with ``fp8_linears``, fp8 linear layers put on after them: blade_ops.models.fp8_linear).

    A family with several transformers (experts) gets ASA on each, and each LoRA on the expert it names."""
    from ..blade_ops.prepare import prepared_transformer

    family = model.family
    with ExitStack() as stack:
        handles = []
        for index, name in enumerate(family.expert_names):
            loras = [(p.lora, p.strength) for p in model.loras if family.expert_index(p.expert) == index]
            prepared = stack.enter_context(
                prepared_transformer(getattr(model.bundle, name), asa=model.asa, loras=loras, fp8_linears=fp8_linears)
            )
            handles.append(prepared.asa_handle)
        yield handles[0]
