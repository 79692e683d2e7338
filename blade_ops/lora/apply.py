"""Apply LoRAs to a Wan or CogVideoX transformer: unmerged (switchable) through peft, or merged into the weights.

Unmerged LoRAs are peft adapters loaded with diffusers' ``load_lora_adapter``; strength is the peft scale, so it
changes at run time without reloading, and several LoRAs stack as separate adapters. Merged LoRAs are added to
the base weights directly instead of through peft's merge: peft ignores every unmerged adapter of a layer once
one adapter of that layer is merged, so its merge cannot be mixed with switchable LoRAs. The factors of a merged
LoRA are kept so that it can be unmerged, re-weighted or removed again.

ASA attention processors call ``attn.to_q(...)`` and friends, so both paths apply under them unchanged; REFERENCE.md
("Inference with a BLADE LoRA") installs ASA first, then loads the LoRA, and either order works here. fp8 linear
layers (blade_ops.models.fp8_linear) go on after the LoRAs; while they are installed, no LoRA is added, merged,
unmerged or removed (the fp8 weights would not follow).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..finite import check_finite, count_nonfinite, is_finite
from ..models.fp8_linear import refuse_while_installed
from .fit import check_lora_fits, linear_of
from .formats import LoRAFile, LoRAInfo, read_lora

logger = logging.getLogger(__name__)

_REGISTRY_ATTR = "_blade_loras"
_NAME_OK = re.compile(r"^[A-Za-z0-9_-]+$")

# module path -> (A [r, in], B [out, r] with alpha/r folded in, bias [out] with alpha/r folded in, or None)
Factors = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


@dataclass
class AppliedLoRA:
    """One LoRA on a transformer: its adapter name, strength and state."""

    name: str
    info: LoRAInfo
    strength: float
    merged: bool
    enabled: bool = True
    factors: Factors | None = field(default=None, repr=False)  # kept only while merged


def applied_loras(transformer: nn.Module) -> dict[str, AppliedLoRA]:
    """The LoRAs applied to ``transformer`` by this module, by adapter name (live view; do not mutate)."""
    registry = transformer.__dict__.get(_REGISTRY_ATTR)
    if registry is None:
        registry = {}
        setattr(transformer, _REGISTRY_ATTR, registry)
    return registry


def _entry(transformer: nn.Module, adapter_name: str) -> AppliedLoRA:
    registry = applied_loras(transformer)
    if adapter_name not in registry:
        valid = ", ".join(repr(n) for n in registry) or "none"
        raise ValueError(f"No LoRA named {adapter_name!r} on this model; applied LoRAs: {valid}.")
    return registry[adapter_name]


def _check_strength(strength: float) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(f"LoRA strength must be a finite number (negative and > 1 allowed); got {strength!r}.")
    return float(strength)


def _new_name(transformer: nn.Module, adapter_name: str | None, lora: LoRAFile) -> str:
    taken = set(applied_loras(transformer)) | set(getattr(transformer, "peft_config", {}) or {})
    if adapter_name is not None:
        if not _NAME_OK.match(adapter_name):
            raise ValueError(f"Adapter name {adapter_name!r} may use only letters, digits, '_' and '-'.")
        if adapter_name in taken:
            raise ValueError(f"Adapter name {adapter_name!r} is already in use; taken: {', '.join(sorted(taken))}.")
        return adapter_name
    stem = Path(lora.info.path).stem if lora.info.path else "lora"
    base = re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "lora"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def _folded_factors(lora: LoRAFile) -> Factors:
    factors: Factors = {}
    for module in lora.modules:
        scale = lora.scale(module)
        a = lora.state_dict[module + ".lora_A.weight"]
        b = lora.state_dict[module + ".lora_B.weight"]
        bias = lora.state_dict.get(module + ".lora_B.bias")
        factors[module] = (a, b * scale if scale != 1 else b, None if bias is None else bias * scale)
    return factors


def _updated(param: torch.Tensor, delta: torch.Tensor, coeff: float) -> torch.Tensor:
    """``param + coeff * delta`` computed in float32, in the parameter's dtype."""
    if param.dtype == torch.float32:
        return param + coeff * delta
    return (param.float() + coeff * delta).to(param.dtype)


def _module_updates(transformer: nn.Module, factors: Factors, coeff: float):
    """Yield (module path, parameter, its new value) for every weight and bias a delta changes."""
    for module, (a, b, bias) in factors.items():
        linear = linear_of(transformer.get_submodule(module))
        w = linear.weight
        delta = b.to(w.device, torch.float32) @ a.to(w.device, torch.float32)
        yield module, w, _updated(w, delta, coeff)
        if bias is not None:
            yield module, linear.bias, _updated(linear.bias, bias.to(w.device, torch.float32), coeff)


def _factor_tensors(factors: Factors) -> dict[str, torch.Tensor]:
    named = {}
    for module, (a, b, bias) in factors.items():
        named.update({f"{module}.lora_A.weight": a, f"{module}.lora_B.weight": b})
        if bias is not None:
            named[f"{module}.lora_B.bias"] = bias
    return named


@torch.no_grad()
def _add_delta(transformer: nn.Module, factors: Factors, coeff: float, what: str) -> None:
    """W += coeff * B @ A (and b += coeff * bias) for every module, computed in float32 on the weight's device.

    Every new value is computed and checked before any is written (the update is computed twice, a cost only
    merging pays): an update that would leave a weight NaN or Inf (damaged factors, or an fp16 overflow at this
    strength) is refused and the model stays exactly as it was.
    """
    if coeff == 0:
        return
    refuse_while_installed(transformer, what)
    bad = [(m, p, new) for m, p, new in _module_updates(transformer, factors, coeff) if not is_finite(new)]
    if bad:
        found = [count_nonfinite(m, new) for m, _, new in bad]
        raise ValueError(
            f"{what} at strength {coeff:g} would make the weights of {len(bad)} modules NaN or Inf ("
            + ", ".join(f.describe() for f in found[:3])
            + f", in {bad[0][1].dtype}); nothing was changed. Lower the strength, load the model in bf16 or fp32 "
            "instead of fp16, apply the LoRA unmerged, or check that the files are not damaged."
        )
    for _, param, new in _module_updates(transformer, factors, coeff):
        param.copy_(new)


def _load_peft(transformer: nn.Module, name: str, factors: Factors) -> None:
    refuse_while_installed(transformer, f"Loading LoRA {name!r}")
    state: dict[str, torch.Tensor] = {}
    for module, (a, b, bias) in factors.items():
        state[f"{module}.lora_A.weight"] = a
        state[f"{module}.lora_B.weight"] = b
        if bias is not None:
            state[f"{module}.lora_B.bias"] = bias
    # alpha is folded into B, so diffusers' default (alpha == rank, scale 1) is right for every module.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")  # stacking is intended
        transformer.load_lora_adapter(state, prefix=None, adapter_name=name)


def _peft_factors(transformer: nn.Module, name: str) -> Factors:
    from peft.tuners.tuners_utils import BaseTunerLayer

    factors: Factors = {}
    for module_name, module in transformer.named_modules():
        if isinstance(module, BaseTunerLayer) and name in getattr(module, "lora_A", {}):
            scale = module.lora_alpha[name] / module.r[name]
            lora_b = module.lora_B[name]
            bias = None if lora_b.bias is None else lora_b.bias.detach() * scale
            factors[module_name] = (module.lora_A[name].weight.detach().clone(), lora_b.weight.detach() * scale, bias)
    return factors


def _drop_peft(transformer: nn.Module, name: str) -> None:
    """Delete one peft adapter; unwrap the peft layers once no adapter is left."""
    from diffusers.utils.peft_utils import recurse_remove_peft_layers

    refuse_while_installed(transformer, f"Removing LoRA {name!r}")
    transformer.delete_adapters(name)
    if not getattr(transformer, "peft_config", None):
        recurse_remove_peft_layers(transformer)
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            if attr in transformer.__dict__:
                delattr(transformer, attr)


def _sync_peft(transformer: nn.Module) -> None:
    """Make peft's active adapters and scales match the registry (unmerged, enabled LoRAs at their strength)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    registry = applied_loras(transformer)
    ours = [n for n, e in registry.items() if not e.merged]
    active = [n for n in ours if registry[n].enabled]
    for module in transformer.modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        others = [a for a in module.active_adapters if a not in registry]
        names = others + active
        module.set_adapter(names)
        module.enable_adapters(bool(names))
        for name in ours:
            module.set_scale(name, registry[name].strength)
            for params in (module.lora_A, module.lora_B):
                if name in params:
                    params[name].requires_grad_(False)


def apply_lora(
    transformer: nn.Module,
    lora: str | Path | LoRAFile,
    *,
    strength: float = 1.0,
    adapter_name: str | None = None,
    merge: bool = False,
) -> str:
    """Apply a LoRA file (or a :class:`LoRAFile`) to a diffusers Wan/CogVideoX transformer; return its adapter name.

    ``merge=False`` keeps it switchable (strength, enable/disable, remove) through peft; ``merge=True`` adds
    ``strength * alpha / r * B @ A`` to the weights (no run-time cost) and remembers it for unmerge/remove.
    Raises ValueError if the LoRA does not fit the model entirely (nothing is changed then).
    """
    strength = _check_strength(strength)
    refuse_while_installed(transformer, "Applying a LoRA")
    lora = lora if isinstance(lora, LoRAFile) else read_lora(lora)
    check_lora_fits(transformer, lora)
    name = _new_name(transformer, adapter_name, lora)
    factors = _folded_factors(lora)
    # read_lora already refused a file with NaN/Inf; this also covers a LoRAFile built in memory (cheap: LoRA-sized).
    check_finite(_factor_tensors(factors), f"LoRA {name!r}")
    registry = applied_loras(transformer)
    if merge:
        _add_delta(transformer, factors, strength, f"Merging LoRA {name!r}")
        registry[name] = AppliedLoRA(name, lora.info, strength, merged=True, factors=factors)
    else:
        _load_peft(transformer, name, factors)
        registry[name] = AppliedLoRA(name, lora.info, strength, merged=False)
        _sync_peft(transformer)
    logger.info(
        "Applied LoRA %r (%s naming, %d modules, rank %s) at strength %g, %s",
        name, lora.info.source_format, lora.info.num_modules, lora.info.rank, strength,
        "merged" if merge else "unmerged",
    )
    return name


def set_lora_strength(transformer: nn.Module, adapter_name: str, strength: float) -> None:
    """Change one LoRA's strength in place (merged ones are re-weighted in the weights)."""
    strength = _check_strength(strength)
    entry = _entry(transformer, adapter_name)
    if entry.merged:
        if entry.enabled:
            _add_delta(transformer, entry.factors, strength - entry.strength, f"Re-weighting LoRA {adapter_name!r}")
        entry.strength = strength
    else:
        entry.strength = strength
        _sync_peft(transformer)


def _select(transformer: nn.Module, adapter_names: str | list[str] | None) -> list[AppliedLoRA]:
    if adapter_names is None:
        return list(applied_loras(transformer).values())
    names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
    return [_entry(transformer, n) for n in names]


def _set_enabled(transformer: nn.Module, adapter_names: str | list[str] | None, enabled: bool) -> None:
    for entry in _select(transformer, adapter_names):
        if entry.enabled == enabled:
            continue
        if entry.merged:
            what = f"{'Enabling' if enabled else 'Disabling'} merged LoRA {entry.name!r}"
            _add_delta(transformer, entry.factors, entry.strength if enabled else -entry.strength, what)
        entry.enabled = enabled
    _sync_peft(transformer)


def disable_loras(transformer: nn.Module, adapter_names: str | list[str] | None = None) -> None:
    """Switch LoRAs off (all by default) without forgetting them; merged ones are taken out of the weights."""
    _set_enabled(transformer, adapter_names, False)


def enable_loras(transformer: nn.Module, adapter_names: str | list[str] | None = None) -> None:
    """Switch LoRAs back on (all by default) at their strength."""
    _set_enabled(transformer, adapter_names, True)


def merge_loras(transformer: nn.Module, adapter_names: str | list[str] | None = None) -> None:
    """Fuse unmerged LoRAs (all by default) into the weights; they stay listed and can be unmerged again."""
    for entry in _select(transformer, adapter_names):
        if entry.merged:
            continue
        factors = _peft_factors(transformer, entry.name)
        if entry.enabled:  # checked first, so a refused merge leaves the adapter as it was
            _add_delta(transformer, factors, entry.strength, f"Merging LoRA {entry.name!r}")
        _drop_peft(transformer, entry.name)
        entry.factors, entry.merged = factors, True
    _sync_peft(transformer)


def unmerge_loras(transformer: nn.Module, adapter_names: str | list[str] | None = None) -> None:
    """Take merged LoRAs (all by default) out of the weights and keep them as switchable peft adapters."""
    for entry in _select(transformer, adapter_names):
        if not entry.merged:
            continue
        if entry.enabled:
            _add_delta(transformer, entry.factors, -entry.strength, f"Unmerging LoRA {entry.name!r}")
        _load_peft(transformer, entry.name, entry.factors)
        entry.merged, entry.factors = False, None
    _sync_peft(transformer)


def remove_lora(transformer: nn.Module, adapter_name: str) -> None:
    """Remove one LoRA completely (unmerged: delete the adapter; merged: subtract it from the weights)."""
    entry = _entry(transformer, adapter_name)
    if entry.merged:
        if entry.enabled:
            _add_delta(transformer, entry.factors, -entry.strength, f"Removing LoRA {adapter_name!r}")
    else:
        _drop_peft(transformer, adapter_name)
    del applied_loras(transformer)[adapter_name]
    _sync_peft(transformer)
    logger.info("Removed LoRA %r", adapter_name)


def remove_loras(transformer: nn.Module) -> None:
    """Remove every LoRA applied through this module."""
    for name in list(applied_loras(transformer)):
        remove_lora(transformer, name)
