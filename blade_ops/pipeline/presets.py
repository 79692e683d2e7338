"""The two ways to run a model, as one switch: ``blade`` (ASA + BLADE LoRA, 8 steps, no CFG) and ``baseline``
(dense, the family's 50-step solver with CFG). REFERENCE.md, "Inference with a BLADE LoRA" and "Baselines"."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..families import FamilySpec
from ..models.bundle import ModelBundle
from .request import GenerationRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    name: str
    sampler: str
    sparse: bool  # install ASA in the transformer's self-attention
    expects_lora: bool  # the schedule only gives good videos with a BLADE LoRA applied
    cfg: bool  # classifier-free guidance at the family's baseline scale (off: guidance 1.0)
    description: str

    def guidance(self, family: FamilySpec) -> float:
        """CFG scale of this preset for ``family`` (its baseline scale, or 1.0 without CFG)."""
        return family.baseline_guidance if self.cfg else 1.0

    def guidance_2(self, family: FamilySpec) -> float | None:
        """CFG scale of the family's second expert (Wan2.2 A14B's low-noise expert); None: the same as ``guidance``."""
        return family.baseline_guidance_2 if self.cfg else None

    def dynamic_guidance(self, family: FamilySpec) -> bool:
        """Whether the scale ramps over the steps (CogVideoX-5B's baseline, diffusers' use_dynamic_cfg)."""
        return self.cfg and family.baseline_dynamic_guidance


PRESETS: dict[str, Preset] = {
    "blade": Preset(
        "blade", "blade", sparse=True, expects_lora=True, cfg=False,
        description="ASA sparse attention + BLADE LoRA, 8 steps, no CFG",
    ),
    "baseline": Preset(
        "baseline", "baseline", sparse=False, expects_lora=False, cfg=True,
        description="dense attention, the family's steps (50; Wan2.2 A14B 40) and CFG (Wan 5.0; CogVideoX 6.0 "
        "dynamic; Wan2.2 A14B 4.0 / 3.0 per expert)",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; valid presets: {', '.join(PRESETS)}.")
    return PRESETS[name]


def preset_request(name: str, family: FamilySpec, prompt: str | list[str], **overrides) -> GenerationRequest:
    """A request with the preset's sampler and guidance for ``family``; keyword arguments override any field."""
    preset = get_preset(name)
    fields = {
        "prompt": prompt,
        "sampler": preset.sampler,
        "guidance": preset.guidance(family),
        "guidance_2": preset.guidance_2(family),
        "dynamic_guidance": preset.dynamic_guidance(family),
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return GenerationRequest(**fields)


def prepare_model(
    bundle: ModelBundle,
    preset: str,
    *,
    lora: str | Path | None = None,
    lora_strength: float = 1.0,
    asa_config=None,  # blade_ops.attention.ASAConfig; None: the LoRA's recorded settings, else the family's
    backend: str = "auto",
    expert_loras: dict[str, tuple[str | Path, float]] | None = None,
) -> ModelBundle:
    """Make ``bundle``'s transformers ready for ``preset``: ASA first, then the LoRA (the order BLADE trained in).

    Without ``asa_config``, a LoRA that records the ASA settings it was distilled with (``blade.asa`` metadata,
    written by ``training.distill``) gets those; otherwise the family's paper settings apply
    (:func:`blade_ops.prepare.resolve_asa_config`). ``lora`` goes on the first transformer; a family with several
    (experts) takes one more LoRA per expert in ``expert_loras`` ({"transformer_2": (path, strength)}), and ASA goes
    on every expert. Modifies the transformers in place and returns the bundle.
    """
    from ..attention import ASAConfig
    from ..lora import read_lora
    from ..prepare import AsaRequest, prepare_transformer

    p = get_preset(preset)
    bundle.require("transformer")
    family = bundle.family
    chosen = {family.expert_names[0]: (lora, lora_strength), **(expert_loras or {})}
    for name in chosen:
        family.expert_index(name)  # raises naming the family's experts
    asa = None
    if p.sparse:
        config = asa_config if asa_config is not None else ASAConfig.for_family(family.name)
        asa = AsaRequest(family.name, config, backend, source="custom" if asa_config is not None else "lora")
    loras = []
    for name in family.expert_names:
        path, strength = chosen.get(name, (None, 1.0))
        these = [(read_lora(path), strength)] if path is not None else []
        prepare_transformer(getattr(bundle, name), asa=asa, loras=these)
        loras += these
    if not loras and p.expects_lora:
        logger.warning(
            "Preset %r without a BLADE LoRA: the base model in 8 steps without CFG gives blurry videos.", preset
        )
    return bundle


def warn_off_schedule_loras(transformer, steps: int, guidance: float) -> list[str]:
    """Log a warning for each BLADE LoRA on ``transformer`` that this run samples off the schedule it was distilled
    for (8 steps without CFG), e.g. under the baseline preset's 50 CFG steps, which garbles the video. Returns the
    adapter names warned about."""
    from ..lora import applied_loras

    warned = []
    for entry in applied_loras(transformer).values():
        distilled = entry.info.distilled_steps
        if distilled is None or not entry.enabled or entry.strength == 0:
            continue
        if steps == distilled and guidance <= 1.0:
            continue
        cfg = f"CFG {guidance:g}" if guidance > 1.0 else "no CFG"
        logger.warning(
            "LoRA %r is a BLADE LoRA, distilled for %d steps without CFG; this run samples %d steps with %s, which "
            "gives garbled videos. Use the blade preset (command line: --preset blade; Python: prepare_model(bundle, "
            "'blade', lora=...) and preset_request('blade', ...); nodes: scheduler blade, %d steps, guidance 1.0), "
            "or leave the LoRA out for the 50-step baseline.",
            entry.name, distilled, steps, cfg, distilled,
        )
        warned.append(entry.name)
    return warned
