"""BLADE ASA node: record adaptive block-sparse attention (BLADE Sec. 3.2) on a clone of the model."""

from __future__ import annotations

from .types import BLADE_MODEL, CATEGORY, AsaPatch, BladeModel

ASA_BACKENDS = ["auto", "flex", "block_sparse_attn", "torch"]


def parse_layers(text: str) -> tuple[int, ...]:
    """"0, 1, 28-29" -> (0, 1, 28, 29). Raises ValueError naming the bad part."""
    layers: set[int] = set()
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                layers.update(range(lo, hi + 1))
            else:
                layers.add(int(part))
        except ValueError:
            raise ValueError(
                f"dense_layers: {part!r} is not a layer index or range; write e.g. '0, 1, 28-29' (or leave empty)."
            ) from None
    if any(i < 0 for i in layers):
        raise ValueError("dense_layers: layer indices start at 0.")
    return tuple(sorted(layers))


class BladeASA:
    """Swap the transformer's self-attention for ASA (adaptive block-sparse attention)."""

    DESCRIPTION = (
        "Adaptive block-sparse attention: each 128x128 block of self-attention is kept only if a cheap estimate "
        "says it matters (energy threshold tau, clamped between min and max ratio of key blocks), plus a pooled "
        "global branch. Put it before the BLADE LoRA (the LoRA was distilled with it). 0 in max_ratio / "
        "sample_gap takes the family's value (Wan 0.17 / 30, CogVideoX 0.10 / 15)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = (BLADE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model with ASA; the input model is unchanged.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (BLADE_MODEL, {"tooltip": "From BLADE Model Loader."}),
                "backend": (
                    ASA_BACKENDS,
                    {
                        "default": "auto",
                        "tooltip": "Sparse kernel: auto picks the fastest installed (flex on CUDA); torch is the "
                        "dense-masked reference (CPU); block_sparse_attn needs mit-han-lab's package.",
                    },
                ),
                "tau": ("FLOAT", {"default": 0.95, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "Attention mass each query block keeps; lower = sparser, faster."}),
                "min_ratio": ("FLOAT", {"default": 0.05, "min": 0.01, "max": 1.0, "step": 0.01,
                                        "tooltip": "Keep at least this share of key blocks per query block."}),
                "max_ratio": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Keep at most this share of key blocks; 0 = family default "
                                        "(Wan 0.17, CogVideoX 0.10)."}),
                "num_keep": ("INT", {"default": 32, "min": 1, "max": 128, "step": 1,
                                     "tooltip": "Tokens sampled per block for the importance estimate (16-32)."}),
                "use_global": ("BOOLEAN", {"default": True,
                                           "tooltip": "Add the pooled global-context branch (recommended)."}),
                "sample_gap": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 1,
                                       "tooltip": "Pool keys/values every N tokens for the global branch; 0 = "
                                       "family default (Wan 30, CogVideoX 15)."}),
                "dense_steps": ("INT", {"default": 0, "min": 0, "max": 1000, "step": 1,
                                        "tooltip": "Run the first N sampling steps with dense attention."}),
                "dense_layers": ("STRING", {"default": "", "multiline": False,
                                            "tooltip": "Blocks that always run dense, e.g. '0, 1, 28-29'; empty = "
                                            "none."}),
            },
            "optional": {
                "estimate_precision": (
                    ["auto", "bf16", "fp8"],
                    {
                        "default": "auto",
                        "tooltip": "Precision of the block-importance estimate. auto = fp8 on GPUs with fp8 tensor "
                        "cores (RTX 40xx, H100 and later: about 40% cheaper, same attention mass kept), else bf16.",
                    },
                ),
            },
        }

    def patch(
        self,
        model: BladeModel,
        backend: str = "auto",
        tau: float = 0.95,
        min_ratio: float = 0.05,
        max_ratio: float = 0.0,
        num_keep: int = 32,
        use_global: bool = True,
        sample_gap: int = 0,
        dense_steps: int = 0,
        dense_layers: str = "",
        estimate_precision: str | None = None,
    ) -> tuple[BladeModel]:
        from ..blade_ops.attention.config import ASAConfig

        if backend not in ASA_BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {ASA_BACKENDS}.")
        overrides: dict = dict(tau=tau, min_ratio=min_ratio, num_keep=num_keep, use_global=use_global,
                               dense_steps=dense_steps, dense_layers=parse_layers(dense_layers),
                               estimate_precision=estimate_precision or "auto")
        if max_ratio > 0:
            overrides["max_ratio"] = max_ratio
        if sample_gap > 0:
            overrides["sample_gap"] = sample_gap
        config = ASAConfig.for_family(model.family.name, **overrides)
        return (model.with_asa(AsaPatch(config=config, backend=backend)),)


NODES = {"BladeASA": (BladeASA, "BLADE ASA (sparse attention)")}
