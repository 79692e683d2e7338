"""Put a BladeModel's recorded patches (ASA, LoRAs) on the shared transformer for a run, and keep them there while
the next runs ask for the same ones.

The order and the ASA settings are decided by :func:`blade_ops.prepare.prepare_transformer`, the same function the
command line and training use: ASA first, then the LoRAs in chain order, with the ASA settings a BLADE LoRA
records unless the BLADE ASA node asks otherwise.

Every run sees exactly its own patches, as if they were put on for it and taken off after it. What is avoided is
the work in between: the patches of a run stay on the transformer afterwards, recorded with the request they answer
(ASA request, each LoRA file object with its strength and expert, the device), and a run with the same request
finds them in place. That matters most for compiled blocks (BLADE Sampler's ``compile``): swapping attention
processors or loading/removing a peft LoRA makes them recompile, so the same graph run twice compiles once. A run
with another request (other settings, another LoRA or strength, or none at all, e.g. a baseline branch on the same
loaded model) takes the old patches off and puts its own on first. A run that fails or is cancelled takes its
patches off on the way out, and a failed install leaves the transformer as it was, so the loaded model stays usable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .types import BladeModel

_INSTALLED_ATTR = "_blade_node_patches"


@dataclass
class InstalledPatches:
    """What :func:`patched` left on one transformer: the request it answers and how to take exactly that off."""

    key: tuple  # (device, ASA request, ((id of the LoRA file object, strength), ...))
    prepared: Any  # blade_ops.prepare.PreparedTransformer
    loras: tuple  # the LoRA file objects the key names by id, held so that no other object can take their ids


def installed_patches(transformer: Any) -> InstalledPatches | None:
    """The patches an earlier run left on ``transformer`` (None: it carries none of the sampler's)."""
    return getattr(transformer, _INSTALLED_ATTR, None)


def unpatch(transformer: Any) -> bool:
    """Take off the patches an earlier run left on ``transformer``; True if there were any."""
    installed = installed_patches(transformer)
    if installed is None:
        return False
    delattr(transformer, _INSTALLED_ATTR)
    installed.prepared.undo()
    return True


def _device(transformer: Any) -> str:
    try:
        return str(next(transformer.parameters()).device)
    except StopIteration:
        return "cpu"


def _ensure(transformer: Any, asa, loras: list[tuple[Any, float]], fp8_linears: bool = False) -> object:
    """Make ``transformer`` carry exactly ``asa``, ``loras`` and (or not) fp8 linears, reusing what is there if it is
    that; ASA's handle."""
    from ..blade_ops.prepare import prepare_transformer

    # ASA picks its kernel for the transformer's device (and fp8 linears quantise there): the device is part of the
    # request.
    key = (_device(transformer), asa, tuple((id(lora), float(strength)) for lora, strength in loras), fp8_linears)
    installed = installed_patches(transformer)
    if installed is not None and installed.key == key:
        handle = installed.prepared.asa_handle
        if handle is not None:
            handle.stats.reset()  # the run's densities only, as on a fresh install
        return handle
    unpatch(transformer)
    if asa is None and not loras and not fp8_linears:
        return None
    prepared = prepare_transformer(transformer, asa=asa, loras=loras, fp8_linears=fp8_linears)  # on error: nothing on
    setattr(transformer, _INSTALLED_ATTR, InstalledPatches(key, prepared, tuple(lora for lora, _ in loras)))
    return prepared.asa_handle


@contextmanager
def patched(model: BladeModel, *, fp8_linears: bool = False) -> Iterator[object]:
    """Yield ASA's handle on the first transformer (or None) while the transformers carry exactly ``model``'s patches
    (and, with ``fp8_linears``, fp8 linear layers put on after them: blade_ops.models.fp8_linear).

    A family with several transformers (experts) gets ASA on each, and each LoRA on the expert it names. The
    patches stay on after a run that succeeds (see the module docstring); on any error, while patching or during
    the run, every transformer of the model is left without the sampler's patches."""
    family = model.family
    transformers = [getattr(model.bundle, name) for name in family.expert_names]
    try:
        handles = []
        for index, transformer in enumerate(transformers):
            loras = [(p.lora, p.strength) for p in model.loras if family.expert_index(p.expert) == index]
            handles.append(_ensure(transformer, model.asa, loras, fp8_linears))
        yield handles[0]
    except BaseException:
        for transformer in transformers:
            unpatch(transformer)
        raise
