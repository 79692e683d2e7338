"""The custom socket types the BLADE nodes pass between each other, and the model wrapper they clone.

BLADE_MODEL is a :class:`BladeModel`: a loaded :class:`~blade_ops.models.bundle.ModelBundle` (shared, never
changed by a node) plus the patches chained onto it (ASA, LoRAs). Like ComfyUI's ModelPatcher, a node that adds a
patch returns a clone with the patch recorded; the sampler puts exactly the patches of its run on the shared
transformer (keeping them there for the next run that asks for the same ones: ``nodes.patching``), so two branches
of a graph can share one loaded transformer. BLADE_VAE and BLADE_TEXT_ENCODER are
bundles holding only that part; BLADE_EMBEDS is :class:`~blade_ops.text.PromptEmbeds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..blade_ops.families import FamilySpec
from ..blade_ops.models.bundle import ModelBundle
from ..blade_ops.prepare import AsaRequest

BLADE_MODEL = "BLADE_MODEL"
BLADE_VAE = "BLADE_VAE"
BLADE_TEXT_ENCODER = "BLADE_TEXT_ENCODER"
BLADE_EMBEDS = "BLADE_EMBEDS"

CATEGORY = "BLADE"


@dataclass(frozen=True)
class LoraPatch:
    """A LoRA file applied (unmerged) for a run, at ``strength``; ``lora`` is the file as read and checked.
    ``expert``: which transformer of a family with several gets it (None: the first)."""

    path: Path
    strength: float
    lora: object = field(default=None, compare=False, repr=False)  # blade_ops.lora.LoRAFile
    expert: str | None = None


@dataclass(frozen=True)
class BladeModel:
    """A loaded transformer and the patches to apply when sampling with it. Immutable: patch by cloning."""

    bundle: ModelBundle
    asa: AsaRequest | None = None
    loras: tuple[LoraPatch, ...] = ()

    @property
    def family(self) -> FamilySpec:
        return self.bundle.family

    def with_asa(self, patch: AsaRequest | None) -> BladeModel:
        """A clone with ASA set (replacing any earlier ASA patch: one attention at a time)."""
        return replace(self, asa=patch)

    def with_lora(self, patch: LoraPatch) -> BladeModel:
        """A clone with one more LoRA; LoRAs stack in chain order."""
        return replace(self, loras=self.loras + (patch,))

    def describe(self) -> str:
        parts = [self.bundle.variant or self.family.name]
        if self.asa is not None:
            parts.append(f"ASA[{self.asa.backend}]")
        parts += [f"LoRA {p.path.name}@{p.strength:g}" + (f" on {p.expert}" if p.expert else "") for p in self.loras]
        return " + ".join(parts)
