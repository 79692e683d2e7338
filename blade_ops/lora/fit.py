"""Check that a LoRA fits a transformer before anything is injected, and say why not when it does not.

A LoRA that matches only some modules is refused rather than silently applied in part: a Wan 14B LoRA on the
1.3B model, a CogVideoX LoRA on Wan or an image-model LoRA would otherwise load "fine" and do nothing useful.
"""

from __future__ import annotations

import re

from torch import nn

from .formats import FAMILY_LABELS, KNOWN_DIMS, LoRAFile, lora_width

_SHOW = 5  # how many offending keys an error lists


def model_family(transformer: nn.Module) -> str:
    """The family name of a supported video transformer, else its class name."""
    from ..families import family_of_transformer

    try:
        return family_of_transformer(transformer).name
    except ValueError:
        return type(transformer).__name__


def model_width(transformer: nn.Module) -> int | None:
    """Hidden size (heads x head_dim) from the diffusers config, or None."""
    config = getattr(transformer, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "attention_head_dim", None)
    return int(heads * head_dim) if heads and head_dim else None


def describe(family: str | None, width: int | None) -> str:
    """Human name of a family at a width: "Wan 14B", "CogVideoX-5B", or "Wan" for an unknown width."""
    if family is None:
        return "unknown model"
    known = KNOWN_DIMS.get(family, {}).get(width) if width else None
    return known or FAMILY_LABELS.get(family, family)


def linear_of(module: nn.Module | None) -> nn.Linear | None:
    """The ``nn.Linear`` behind a module, looking through a peft wrapper; None if it is not a linear layer."""
    if module is None:
        return None
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    return base if isinstance(base, nn.Linear) else None


def _expected_shape(key: str, lora: LoRAFile, linear: nn.Linear) -> tuple[int, ...]:
    module = key.rsplit(".lora_", 1)[0]
    rank = lora.rank(module)
    if key.endswith(".lora_A.weight"):
        return (rank, linear.in_features)
    if key.endswith(".lora_B.weight"):
        return (linear.out_features, rank)
    return (linear.out_features,)


def _blocks(keys) -> set[int]:
    return {int(m.group(2)) for k in keys if (m := re.search(r"(^|\.)(?:transformer_)?blocks\.(\d+)\.", k))}


def check_lora_fits(transformer: nn.Module, lora: LoRAFile) -> None:
    """Raise ValueError unless every LoRA tensor lands on a linear layer of the model with the right shape.

    The message gives how many keys matched out of how many, lists a few that did not, and names the model the LoRA
    looks made for (another family, or the same family at another width).
    """
    modules = dict(transformer.named_modules())
    missing: list[str] = []
    wrong: list[str] = []
    matched = 0
    for key, tensor in lora.state_dict.items():
        linear = linear_of(modules.get(key.rsplit(".lora_", 1)[0]))
        if linear is None or (key.endswith(".lora_B.bias") and linear.bias is None):
            missing.append(key)
            continue
        expected = _expected_shape(key, lora, linear)
        if tuple(tensor.shape) != expected:
            wrong.append(f"{key} {list(tensor.shape)} vs Linear({linear.in_features}->{linear.out_features})")
            continue
        matched += 1
    total = len(lora.state_dict)
    if matched == total:
        return

    family, width = model_family(transformer), model_width(transformer)
    what = f"LoRA {lora.info.path!r}" if lora.info.path else "LoRA"
    parts = [
        f"{what} does not fit {type(transformer).__name__} ({describe(family, width)}, dim {width}): "
        f"{matched} of {total} LoRA keys match the model."
    ]
    if missing:
        more = ", ..." if len(missing) > _SHOW else ""
        parts.append(f"Not in the model ({len(missing)}): {', '.join(missing[:_SHOW])}{more}.")
    if wrong:
        more = ", ..." if len(wrong) > _SHOW else ""
        parts.append(f"Wrong shape ({len(wrong)}): {'; '.join(wrong[:_SHOW])}{more}.")

    lora_family = lora.info.family
    lora_dim = lora_width(lora)
    if lora_family is not None and lora_family != family:
        label = FAMILY_LABELS.get(lora_family, lora_family)
        detail = describe(lora_family, lora_dim)
        suffix = f" ({detail})" if detail != label else ""
        article = "an" if label[0] in "AEIOSLMNRX" else "a"
        parts.append(
            f"It looks like {article} {label} LoRA{suffix}; load it with that model, not {describe(family, width)}."
        )
    elif wrong and lora_dim is not None and width is not None and lora_dim != width:
        parts.append(
            f"This is a rank-{lora.info.rank} LoRA for dim {lora_dim} ({describe(family, lora_dim)}) given a "
            f"dim-{width} model ({describe(family, width)})."
        )
    else:
        lora_blocks, model_blocks = _blocks(lora.state_dict), _blocks(modules)
        if lora_blocks and model_blocks and max(lora_blocks) > max(model_blocks):
            parts.append(
                f"The LoRA has blocks up to {max(lora_blocks)}, the model only up to {max(model_blocks)}: it was "
                "made for a deeper model."
            )
        parts.append("A LoRA that fits only in part is not applied.")
    raise ValueError(" ".join(parts))


def lora_fits(transformer: nn.Module, lora: LoRAFile) -> bool:
    """True if :func:`check_lora_fits` would pass."""
    try:
        check_lora_fits(transformer, lora)
    except ValueError:
        return False
    return True

