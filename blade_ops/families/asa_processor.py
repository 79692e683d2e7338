"""What the families' ASA attention processors share: the ASA handle, the layer index, and the call into ASA."""

from __future__ import annotations

from typing import Any

import torch


class ASAProcessorBase:
    """Base of a family's ASA processor: ``handle`` is the model's ``ASAHandle``, ``layer`` the block index."""

    def __init__(self, handle: Any, layer: int) -> None:
        self.handle = handle
        self.layer = layer

    # Not traced by torch.compile, so that the layer index is read here at call time: read in the traced processor,
    # it would become a guard of each compiled block (one recompile per layer, past dynamo's recompile limit on a
    # 30-block model, after which the remaining layers' processors run eagerly).
    @torch.compiler.disable
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_text: int,
               text_first: bool) -> torch.Tensor:
        """``handle.attend`` for this processor's layer on q, k, v [B, H, L, D]; returns [B, H, L, D]."""
        return self.handle.attend(self.layer, q, k, v, num_text, text_first)
