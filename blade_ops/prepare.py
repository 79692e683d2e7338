"""Prepare a transformer for a run: ASA first, then the LoRAs, with the ASA settings a BLADE LoRA records; then,
when asked, fp8 linear layers (:mod:`blade_ops.models.fp8_linear`), which quantise the weights as the LoRAs left them.

BLADE (arXiv 2508.10774, Sec. 3.3) distils its LoRA with ASA in the loop, so a BLADE LoRA records the selection
settings it was trained with (``blade.asa`` metadata, written by ``training.distill``). One rule decides which
settings a run uses, for the command line, the pack's nodes, the nodes that patch ComfyUI's own Wan models and
training (:func:`resolve_asa_config`):

- ``source="lora"``: the settings of the first LoRA that records them, else the family's paper settings;
- ``source="family"``: the family's paper settings, whatever the LoRAs record;
- ``source="custom"``: the request's own config.

Only the block-selection fields come from the source. Where a run goes dense (``dense_steps``, ``dense_layers``)
and how the estimate is computed (``estimate_precision``) always come from the request: they are choices about
this run, not about what the LoRA learnt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .attention.config import ASAConfig

logger = logging.getLogger(__name__)

ASA_SOURCES = ("lora", "family", "custom")
RUN_FIELDS = ("dense_steps", "dense_layers", "estimate_precision")  # always the request's, never the LoRA's


@dataclass(frozen=True)
class AsaRequest:
    """What a caller asks of ASA: a config, where the selection settings come from, and a kernel backend."""

    family: str  # a family name: whose paper settings "family" (and "lora" without metadata) means
    config: ASAConfig  # the custom settings, and the source of RUN_FIELDS whatever ``source`` says
    backend: str = "auto"
    source: str = "lora"

    def __post_init__(self) -> None:
        if self.source not in ASA_SOURCES:
            raise ValueError(f"ASA settings source {self.source!r} is not one of {ASA_SOURCES}.")
        if not isinstance(self.config, ASAConfig):
            raise ValueError(f"config must be an ASAConfig; got {type(self.config).__name__}.")
        ASAConfig.for_family(self.family)  # raises on an unknown family, naming the valid ones


def resolve_asa_config(
    request: AsaRequest, lora_settings: Sequence[Mapping[str, Any] | None]
) -> tuple[ASAConfig, str]:
    """(config for the run, where its selection settings came from) given the ASA settings each LoRA records.

    ``lora_settings``: one entry per LoRA in chain order, the ``blade.asa`` dict or None.
    """
    recorded = [(i, ASAConfig.from_dict(dict(s))) for i, s in enumerate(lora_settings) if s]
    run_fields = {name: getattr(request.config, name) for name in RUN_FIELDS}
    if request.source == "custom":
        chosen, origin = request.config, "custom settings"
    elif request.source == "lora" and recorded:
        index, chosen = recorded[0]
        origin = f"LoRA #{index + 1}'s metadata"
        chosen = dataclasses.replace(chosen, **run_fields)
    else:
        chosen = ASAConfig.for_family(request.family, **run_fields)
        origin = f"{request.family} paper settings"
    for index, other in recorded:
        if _selection(other) != _selection(chosen):
            logger.warning(
                "LoRA #%d was distilled with ASA settings %s, but the run uses %s (%s).",
                index + 1, _selection(other), _selection(chosen), origin,
            )
    return chosen, origin


def _selection(config: ASAConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in RUN_FIELDS}


@dataclass
class PreparedTransformer:
    """What :func:`prepare_transformer` put on a transformer, so that :meth:`undo` takes exactly that off."""

    transformer: Any
    asa_handle: Any = None  # blade_ops.attention.ASAHandle, or None without ASA
    asa_origin: str | None = None
    adapters: list[str] = field(default_factory=list)
    fp8_linears: Any = None  # blade_ops.models.fp8_linear.Fp8Linears, or None without fp8 linears

    def undo(self) -> None:
        """Restore the fp8 linears, remove the LoRAs (last first), then ASA; the transformer is as before
        :func:`prepare_transformer`."""
        from .attention import remove_asa
        from .lora import remove_lora

        if self.fp8_linears is not None:
            self.fp8_linears.restore()
            self.fp8_linears = None
        while self.adapters:
            remove_lora(self.transformer, self.adapters.pop())
        if self.asa_handle is not None:
            remove_asa(self.transformer)
            self.asa_handle = None


def prepare_transformer(
    transformer: Any,
    *,
    asa: AsaRequest | None,
    loras: Sequence[tuple[Any, float]] = (),
    merge: bool = False,
    fp8_linears: bool = False,
    device: Any = None,
) -> PreparedTransformer:
    """Install ASA (when ``asa`` is given) with the settings :func:`resolve_asa_config` picks, then apply ``loras``,
    then, with ``fp8_linears``, replace the blocks' linear layers by fp8 ones for a run on ``device`` (default: where
    the transformer is; it must have fp8 tensor cores: :func:`blade_ops.models.fp8_linear.check_fp8_device`).

    ``loras``: (blade_ops.lora.LoRAFile, strength) pairs in chain order, applied unmerged unless ``merge``. On
    any error, what was already put on is taken off again before the error propagates.
    """
    from .attention import install_asa
    from .lora import apply_lora

    prepared = PreparedTransformer(transformer)
    try:
        if asa is not None:
            config, origin = resolve_asa_config(asa, [lora.info.asa for lora, _ in loras])
            logger.info("ASA settings from %s: %s", origin, config)
            prepared.asa_handle = install_asa(transformer, config, asa.backend)
            prepared.asa_origin = origin
        for lora, strength in loras:
            prepared.adapters.append(apply_lora(transformer, lora, strength=strength, merge=merge))
        if fp8_linears:
            from .models.fp8_linear import install_fp8_linears

            prepared.fp8_linears = install_fp8_linears(transformer, device=device)
    except BaseException:
        prepared.undo()
        raise
    return prepared


@contextlib.contextmanager
def prepared_transformer(
    transformer: Any, *, asa: AsaRequest | None, loras: Sequence[tuple[Any, float]] = (), fp8_linears: bool = False
) -> Iterator[PreparedTransformer]:
    """:func:`prepare_transformer` for the duration of a ``with`` block (also when it fails or is cancelled)."""
    prepared = prepare_transformer(transformer, asa=asa, loras=loras, fp8_linears=fp8_linears)
    try:
        yield prepared
    finally:
        prepared.undo()
