"""The parts of one text-to-video model, kept together with the family they belong to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..families import FamilySpec


@dataclass
class ModelBundle:
    """Transformer, VAE, text encoder and tokenizer of one model; any part may be absent (None).

    A family with several transformers (experts, ``family.expert_names``) keeps the first in ``transformer`` and the
    others under their diffusers names (``transformer_2``); :attr:`experts` lists them in the family's order.
    ``variant`` names the configuration (e.g. "wan2.1-t2v-1.3b"); ``sources`` records the file or folder each
    part was read from, for error messages and logs. ``device`` is where parts run and ``offload`` what happens
    to a part between uses ("none": stays on ``device``; "model": back to the CPU), see ``placement.py``.
    """

    family: FamilySpec
    transformer: torch.nn.Module | None = None
    transformer_2: torch.nn.Module | None = None  # the second expert, for families with two
    vae: torch.nn.Module | None = None
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    scheduler_config: dict | None = None
    variant: str | None = None
    dtype: torch.dtype = torch.float32
    sources: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    offload: str = "none"

    @property
    def experts(self) -> list[torch.nn.Module | None]:
        """The family's transformers in its order (``family.expert_names``); one for most families."""
        return [getattr(self, name) for name in self.family.expert_names]

    def require(self, *parts: str) -> None:
        """Raise ValueError naming the parts a step needs that were not loaded ("transformer": every expert)."""
        names = [n for p in parts for n in (self.family.expert_names if p == "transformer" else (p,))]
        missing = [p for p in dict.fromkeys(names) if getattr(self, p) is None]
        if missing:
            raise ValueError(
                f"The {self.family.name} model is missing {', '.join(missing)}; load "
                f"{'them' if len(missing) > 1 else 'it'} from a diffusers folder or a single file first."
            )

    @contextmanager
    def using(self, part: str) -> Iterator[Any]:
        """``with bundle.using("vae") as vae:`` runs a block with that part on ``device`` under the offload policy."""
        from .placement import on_device

        if part not in ("transformer", "transformer_2", "vae", "text_encoder"):
            raise ValueError(
                f"Unknown model part {part!r}; valid parts: transformer, transformer_2, vae, text_encoder."
            )
        self.require(part)
        with on_device(getattr(self, part), self.device, offload=self.offload) as module:
            yield module
