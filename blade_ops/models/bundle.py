"""The parts of one text-to-video model, kept together with the family they belong to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..families import FamilySpec


@dataclass
class ModelBundle:
    """Transformer, VAE, text encoder and tokenizer of one model; any part may be absent (None).

    ``variant`` names the configuration (e.g. "wan2.1-t2v-1.3b"); ``sources`` records the file or folder each
    part was read from, for error messages and logs.
    """

    family: FamilySpec
    transformer: torch.nn.Module | None = None
    vae: torch.nn.Module | None = None
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    scheduler_config: dict | None = None
    variant: str | None = None
    dtype: torch.dtype = torch.float32
    sources: dict[str, str] = field(default_factory=dict)

    def require(self, *parts: str) -> None:
        """Raise ValueError naming the parts a step needs that were not loaded."""
        missing = [p for p in parts if getattr(self, p) is None]
        if missing:
            raise ValueError(
                f"The {self.family.name} model is missing {', '.join(missing)}; load "
                f"{'them' if len(missing) > 1 else 'it'} from a diffusers folder or a single file first."
            )
