"""BLADE ASA node: record adaptive block-sparse attention (BLADE Sec. 3.2) on a clone of the model.

The ASA knobs are shared with the node that patches ComfyUI's own Wan models (``native_asa``): one input table and
one translation to :class:`blade_ops.prepare.AsaRequest`, so both nodes mean the same by each widget.
"""

from __future__ import annotations

from .inputs import float_inputs
from .types import BLADE_MODEL, CATEGORY, BladeModel

NODE_NAME = "BLADE ASA (sparse attention)"
ASA_BACKENDS = ["auto", "flex", "block_sparse_attn", "torch"]
# What the ``settings`` combo shows -> blade_ops.prepare.ASA_SOURCES
SETTINGS_CHOICES = {
    "LoRA's, else family defaults": "lora",
    "family defaults": "family",
    "custom (values below)": "custom",
}
ESTIMATE_PRECISIONS = ["auto", "bf16", "fp8"]


def parse_layers(text: str, label: str = "dense_layers") -> tuple[int, ...]:
    """"0, 1, 28-29" -> (0, 1, 28, 29). Raises ValueError naming the bad part and the input ``label``."""
    layers: set[int] = set()
    for part in (p.strip() for p in (text or "").replace(";", ",").split(",")):
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
                f"{label}: {part!r} is not a block index or range; write e.g. '0, 1, 28-29' (or leave empty)."
            ) from None
    if any(i < 0 for i in layers):
        raise ValueError(f"{label}: block indices start at 0.")
    return tuple(sorted(layers))


def asa_inputs(dense_label: str = "dense_layers") -> dict:
    """The ASA widgets both ASA nodes show, with the Wan paper values as defaults (CogVideoX: in the tooltips)."""
    used = " Used when settings is 'custom (values below)'."
    return {
        "settings": (
            list(SETTINGS_CHOICES),
            {"default": "LoRA's, else family defaults",
             "tooltip": "Where tau, the ratio clamps, num_keep, the global branch and sample_gap come from. A BLADE "
             "LoRA records the ASA settings it was distilled with: the first choice uses those (else the "
             "model family's paper settings: Wan min 0.05 / max 0.17 / gap 30, CogVideoX 0.05 / 0.10 / 15); "
             "'family defaults' ignores the LoRA's; 'custom' takes the values below. The chosen settings are "
             "logged when sampling starts."},
        ),
        "backend": (
            ASA_BACKENDS,
            {"default": "auto",
             "tooltip": "Sparse kernel: auto picks the fastest installed (flex on CUDA); torch is the dense-masked "
             "reference (CPU); block_sparse_attn needs mit-han-lab's package. A missing kernel is an error, "
             "never a silent dense fallback."},
        ),
        "tau": ("FLOAT", {"default": 0.95, "min": 0.01, "max": 1.0, "step": 0.01,
                          "tooltip": "Attention mass each query block keeps; lower = sparser, faster." + used}),
        "min_ratio": ("FLOAT", {"default": 0.05, "min": 0.01, "max": 1.0, "step": 0.01,
                                "tooltip": "Keep at least this share of key blocks per query block." + used}),
        "max_ratio": ("FLOAT", {"default": 0.17, "min": 0.01, "max": 1.0, "step": 0.01,
                                "tooltip": "Keep at most this share of key blocks (Wan 0.17, CogVideoX 0.10)."
                                + used}),
        "num_keep": ("INT", {"default": 32, "min": 1, "max": 128, "step": 1,
                             "tooltip": "Tokens sampled per 128-token block for the importance estimate (16-32)."
                             + used}),
        "use_global": ("BOOLEAN", {"default": True,
                                   "tooltip": "Add the pooled global-context branch (recommended)." + used}),
        "sample_gap": ("INT", {"default": 30, "min": 1, "max": 1024, "step": 1,
                               "tooltip": "Pool keys/values every N tokens for the global branch (Wan 30, "
                               "CogVideoX 15)." + used}),
        "dense_steps": ("INT", {"default": 0, "min": 0, "max": 1000, "step": 1,
                                "tooltip": "Run the first N sampling steps with dense attention (always applies)."}),
        dense_label: ("STRING", {"default": "", "multiline": False,
                                 "tooltip": "Transformer blocks that always run dense, e.g. '0, 1, 28-29'; empty = "
                                 "none (always applies)."}),
    }


ESTIMATE_INPUT = {
    "estimate_precision": (
        ESTIMATE_PRECISIONS,
        {"default": "auto",
         "tooltip": "Precision of the block-importance estimate. auto = fp8 on GPUs with fp8 tensor cores (RTX 40xx, "
         "H100 and later: about 40% cheaper, same attention mass kept), else bf16."},
    ),
}


def asa_request(
    node: str,
    family: str,
    *,
    settings: str,
    backend: str,
    tau: float,
    min_ratio: float,
    max_ratio: float,
    num_keep: int,
    use_global: bool,
    sample_gap: int,
    dense_steps: int,
    dense_layers: tuple[int, ...],
    estimate_precision: str | None,
):
    """The widgets' values as an :class:`AsaRequest`; errors name the node and the input to change."""
    from ..blade_ops.attention.config import ASAConfig
    from ..blade_ops.prepare import AsaRequest

    if settings not in SETTINGS_CHOICES:
        raise ValueError(f"{node}: settings={settings!r} is not one of {list(SETTINGS_CHOICES)}.")
    if backend not in ASA_BACKENDS:
        raise ValueError(f"{node}: backend={backend!r} is not one of {ASA_BACKENDS}.")
    try:
        config = ASAConfig(tau=tau, min_ratio=min_ratio, max_ratio=max_ratio, num_keep=num_keep,
                           use_global=use_global, sample_gap=sample_gap,
                           dense_steps=dense_steps, dense_layers=dense_layers,
                           estimate_precision=estimate_precision or "auto")
    except ValueError as err:
        raise ValueError(f"{node}: {err}") from None
    return AsaRequest(family, config, backend, source=SETTINGS_CHOICES[settings])


class BladeASA:
    """Swap the transformer's self-attention for ASA (adaptive block-sparse attention)."""

    DESCRIPTION = (
        "Adaptive block-sparse attention: each 128x128 block of self-attention is kept only if a cheap estimate "
        "says it matters (energy threshold tau, clamped between min and max ratio of key blocks), plus a pooled "
        "global branch. Put it before the BLADE LoRA (the LoRA was distilled with it). By default the settings a "
        "BLADE LoRA records win; the values shown are Wan's paper settings."
    )
    CATEGORY = CATEGORY
    FUNCTION = "patch"
    RETURN_TYPES = (BLADE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model with ASA; the input model is unchanged.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {"model": (BLADE_MODEL, {"tooltip": "From BLADE Model Loader."}), **asa_inputs()},
            "optional": dict(ESTIMATE_INPUT),
        }

    def patch(
        self,
        model: BladeModel,
        settings: str = "LoRA's, else family defaults",
        backend: str = "auto",
        tau: float = 0.95,
        min_ratio: float = 0.05,
        max_ratio: float = 0.17,
        num_keep: int = 32,
        use_global: bool = True,
        sample_gap: int = 30,
        dense_steps: int = 0,
        dense_layers: str = "",
        estimate_precision: str | None = None,
    ) -> tuple[BladeModel]:
        floats = float_inputs(BladeASA, NODE_NAME, tau=tau, min_ratio=min_ratio, max_ratio=max_ratio)
        request = asa_request(
            NODE_NAME, model.family.name, settings=settings, backend=backend, **floats, num_keep=num_keep,
            use_global=use_global, sample_gap=sample_gap, dense_steps=dense_steps,
            dense_layers=parse_layers(dense_layers), estimate_precision=estimate_precision,
        )
        return (model.with_asa(request),)


NODES = {"BladeASA": (BladeASA, NODE_NAME)}
