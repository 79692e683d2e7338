"""ASA (adaptive block-sparse attention) settings, validated once at construction.

Values follow BLADE (arXiv 2508.10774, Sec. 3.2 "Adaptive Block-Sparse Attention") and the authors' released
settings; a comment gives the reason where a value is not obvious.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

GLOBAL_MODES = ("auto", "fold", "merge")
ESTIMATE_PRECISIONS = ("auto", "bf16", "fp8")  # kept equal to estimate.ESTIMATE_PRECISIONS (a test checks)
ESTIMATE_TOKENS = ("sampled", "pooled")


@dataclass(frozen=True)
class ASAConfig:
    """How ASA selects and computes blocks. Frozen: processors hold an instance, nobody mutates it."""

    block_size: int = 128  # tile of the sparse kernels (FA2/Flex class); the mask is per 128x128 block
    tau: float = 0.95  # energy threshold of the per-row rule (Sec. 3.2, Eq. 4)
    min_ratio: float = 0.05  # keep at least this share of key blocks per query-block row
    max_ratio: float = 0.17  # ... and at most this share (Wan preset; CogVideoX 0.10)
    num_keep: int = 32  # sampled tokens per block for the estimate; the reference uses 32, the paper says 16
    use_global: bool = True  # add the pooled-token global branch (Sec. 3.2, "global context")
    sample_gap: int = 30  # pool K/V every `sample_gap` tokens in curve order for the global branch
    dense_steps: int = 0  # the first k sampling steps run dense attention
    dense_layers: tuple[int, ...] = ()  # transformer block indices that always run dense
    reorder: bool = True  # permute video tokens along the 3D Gilbert curve so a block is a compact 3D patch
    global_mode: str = "auto"  # "fold": pooled tokens inside the sparse kernel; "merge": second call + LSE merge
    # The estimate only ranks blocks: "auto" scores e4m3 copies of the sampled tokens where the GPU has fp8 tensor
    # cores (same attention mass kept, about 60% of the bf16 estimate's time), else bf16.
    estimate_precision: str = "auto"
    # Rows the estimate scores per block: "sampled" (the reference: num_keep tokens of the block) or "pooled" (each
    # row the mean of block_size/num_keep consecutive curve-order tokens, so every token counts; same estimate cost
    # plus one read of q and k; more attention mass kept at the same density, benchmarks/asa_vs_sol.py).
    estimate_tokens: str = "sampled"
    # The reference's global branch attends to the pooled tokens of every block, so a query also sees, pooled, the
    # blocks it already attends to exactly, and their mass counts twice. True leaves those pooled tokens out per
    # query-block row (needs global_mode "merge" or "auto"; off by default: the BLADE LoRAs were distilled with
    # the reference branch). benchmarks/asa_vs_sol.py measures what it changes.
    global_skips_kept: bool = False

    def __post_init__(self) -> None:
        bs = self.block_size
        if not isinstance(bs, int) or isinstance(bs, bool) or bs < 16 or bs & (bs - 1):
            raise ValueError(f"block_size={bs!r} must be a power of two >= 16 (16, 32, 64, 128, 256, ...).")
        if not _is_real(self.tau) or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau={self.tau!r} must be in (0, 1].")
        for name in ("min_ratio", "max_ratio"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 < value <= 1.0:
                raise ValueError(f"{name}={value!r} must be in (0, 1].")
        if self.min_ratio > self.max_ratio:
            raise ValueError(
                f"min_ratio={self.min_ratio} must be <= max_ratio={self.max_ratio} (valid: 0 < min <= max <= 1)."
            )
        if not isinstance(self.num_keep, int) or isinstance(self.num_keep, bool) or not 1 <= self.num_keep <= bs:
            raise ValueError(f"num_keep={self.num_keep!r} must be an integer in [1, block_size={bs}].")
        for name in ("use_global", "reorder", "global_skips_kept"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False.")
        if not isinstance(self.sample_gap, int) or isinstance(self.sample_gap, bool) or self.sample_gap < 1:
            raise ValueError(f"sample_gap={self.sample_gap!r} must be an integer >= 1.")
        if not isinstance(self.dense_steps, int) or isinstance(self.dense_steps, bool) or self.dense_steps < 0:
            raise ValueError(f"dense_steps={self.dense_steps!r} must be an integer >= 0.")
        layers = self.dense_layers
        if isinstance(layers, list):
            object.__setattr__(self, "dense_layers", tuple(layers))
            layers = self.dense_layers
        if not isinstance(layers, tuple) or any(_bad_index(i) for i in layers):
            raise ValueError(f"dense_layers={layers!r} must be a tuple of layer indices >= 0.")
        object.__setattr__(self, "dense_layers", tuple(sorted(set(layers))))
        if self.global_mode not in GLOBAL_MODES:
            raise ValueError(f"global_mode={self.global_mode!r} is not one of {GLOBAL_MODES}.")
        if self.global_skips_kept and self.global_mode == "fold":
            raise ValueError(
                "global_skips_kept=True leaves pooled tokens out per query-block row, which only the 'merge' global "
                "mode does; use global_mode='merge' or 'auto'."
            )
        if self.estimate_precision not in ESTIMATE_PRECISIONS:
            raise ValueError(
                f"estimate_precision={self.estimate_precision!r} is not one of {ESTIMATE_PRECISIONS}."
            )

        if self.estimate_tokens not in ESTIMATE_TOKENS:
            raise ValueError(f"estimate_tokens={self.estimate_tokens!r} is not one of {ESTIMATE_TOKENS}.")
        if self.estimate_tokens == "pooled" and bs % self.num_keep:
            raise ValueError(
                f"estimate_tokens='pooled' needs num_keep to divide block_size={bs}; got num_keep={self.num_keep}."
            )

    def min_blocks(self, num_key_blocks: int) -> int:
        """Lower clamp of the rule: ceil(min_ratio * n), at least 1 and at most n."""
        return max(1, min(num_key_blocks, math.ceil(self.min_ratio * num_key_blocks - 1e-9)))

    def max_blocks(self, num_key_blocks: int) -> int:
        """Upper clamp of the rule: ceil(max_ratio * n), at least the lower clamp and at most n."""
        hi = min(num_key_blocks, math.ceil(self.max_ratio * num_key_blocks - 1e-9))
        return max(self.min_blocks(num_key_blocks), hi)

    @classmethod
    def for_family(cls, family: Any, **overrides: Any) -> ASAConfig:
        """The authors' settings for a model family (a name or a family adapter), with optional overrides."""
        from ..families import get_family

        preset: dict[str, Any] = dict(get_family(family).asa_preset)
        preset.update(overrides)
        return cls(**preset)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (tuples become lists)."""
        out = asdict(self)
        out["dense_layers"] = list(self.dense_layers)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ASAConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"Unknown ASAConfig keys {unknown}; valid keys: {sorted(valid)}.")
        kwargs = dict(data)
        if "dense_layers" in kwargs:
            kwargs["dense_layers"] = tuple(int(i) for i in kwargs["dense_layers"])
        return cls(**kwargs)


def _bad_index(i: Any) -> bool:
    return not isinstance(i, int) or isinstance(i, bool) or i < 0


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
