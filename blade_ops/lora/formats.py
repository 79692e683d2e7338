"""LoRA files: read any supported naming into one normalised diffusers/peft state dict, and write BLADE's.

BLADE releases its LoRAs as ``pytorch_lora_weights.safetensors`` with diffusers/peft keys (REFERENCE.md,
"Inference with a BLADE LoRA"); ComfyUI users also hold Wan LoRAs in kohya naming (``lora_down``/``lora_up`` +
``.alpha``, with a ``diffusion_model.`` or ``lora_unet_`` prefix) and in the original Wan naming
(``blocks.{i}.self_attn.q.lora_A.weight``). The Wan conversions are diffusers' own
(``WanLoraLoaderMixin.lora_state_dict``); this module adds file checks, metadata and the naming glue around them.

Normalised form: keys are module paths relative to the transformer (no ``transformer.`` prefix) ending in
``.lora_A.weight`` [r, in], ``.lora_B.weight`` [out, r] and optionally ``.lora_B.bias`` [out]; ``alphas`` maps
each module path to its alpha so that the update is ``alpha / r * B @ A``. Where a converter already folded the
alpha into the tensors, the recorded alpha equals the rank.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..families import FAMILIES
from ..finite import check_finite

logger = logging.getLogger(__name__)

SOURCE_FORMATS = ("diffusers", "kohya", "original_wan")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers' JSON copy of the peft LoraConfig
BLADE_PREFIX = "blade."
BLADE_METADATA_FIELDS = ("base_model", "family", "rank", "alpha", "steps", "training_steps", "asa")
BLADE_STEPS = 8  # BLADE's LoRAs are distilled for 8 steps without CFG (REFERENCE.md)
BLADE_RELEASE_RANK = 64
_BLADE_TARGETS = (".to_q", ".to_k", ".to_v", ".to_out.0")

_SUFFIX_A = ".lora_A.weight"
_SUFFIX_B = ".lora_B.weight"
_SUFFIX_BIAS = ".lora_B.bias"
_WAN_ORIGINAL = re.compile(r"(^|\.)blocks\.\d+\.(self_attn|cross_attn|ffn\.\d)\.")
# Tokens of the original Wan module names that contain an underscore (kohya flattens dots into underscores).
_WAN_UNDERSCORE_TOKENS = (
    "self_attn", "cross_attn", "k_img", "v_img", "norm_q", "norm_k", "norm_k_img", "text_embedding",
    "time_embedding", "time_projection", "img_emb",
)


@dataclass(frozen=True)
class LoRAInfo:
    """What a LoRA file says about itself (safetensors metadata) and what its tensors show."""

    source_format: str  # one of SOURCE_FORMATS
    family: str | None  # what the keys look like: a family name, another model's label, or None
    rank: int | None  # most common rank over the modules
    alpha: float | None  # file-level alpha (metadata or most common ``.alpha``); None means alpha == rank
    base_model: str | None = None
    steps: int | None = None  # sampling steps the LoRA was distilled for (BLADE: 8)
    training_steps: int | None = None
    asa: dict[str, Any] | None = None  # ASA settings used in distillation (tau, min/max ratio, ...)
    num_modules: int = 0
    num_params: int = 0
    path: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # the raw safetensors ``__metadata__``
    blade: bool = False  # distilled by BLADE for few steps without CFG (see is_blade_lora)

    @property
    def distilled_steps(self) -> int | None:
        """Sampling steps a BLADE LoRA was distilled for (its ``blade.steps``, else BLADE's 8); None otherwise."""
        return (self.steps or BLADE_STEPS) if self.blade else None


@dataclass
class LoRAFile:
    """A LoRA in normalised diffusers/peft naming; see the module docstring for the key layout."""

    state_dict: dict[str, torch.Tensor]
    alphas: dict[str, float]  # module path -> alpha
    info: LoRAInfo
    raw_keys: tuple[str, ...] = ()  # keys as written in the file, for diagnostics

    @property
    def modules(self) -> list[str]:
        """Module paths the LoRA targets, in file order."""
        return [k[: -len(_SUFFIX_A)] for k in self.state_dict if k.endswith(_SUFFIX_A)]

    def rank(self, module: str) -> int:
        return int(self.state_dict[module + _SUFFIX_A].shape[0])

    def scale(self, module: str) -> float:
        """alpha / r of one module."""
        return float(self.alphas.get(module, self.rank(module))) / self.rank(module)

    def delta(self, module: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Weight update ``alpha / r * B @ A`` of one module at strength 1, [out, in]."""
        a = self.state_dict[module + _SUFFIX_A].to(dtype)
        b = self.state_dict[module + _SUFFIX_B].to(dtype)
        return (b @ a) * self.scale(module)


# ---------------------------------------------------------------------------------------------- file reading


def _resolve_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise ValueError(f"LoRA folder {str(path)!r} must hold exactly one .safetensors file; found: {names}.")
        return found[0]
    if not path.exists():
        near = sorted(p.name for p in path.parent.glob("*.safetensors")) if path.parent.is_dir() else []
        hint = f" .safetensors files in {str(path.parent)!r}: {', '.join(near[:10])}." if near else ""
        raise FileNotFoundError(f"LoRA file not found: {str(path)!r}.{hint}")
    return path


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a complete safetensors file, without ever unpickling it."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"LoRA file {path.name!r} has suffix {path.suffix!r}, a pickled PyTorch format that can run code when "
            "loaded; only .safetensors LoRA files are accepted. Convert it with a trusted tool first."
        )
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        header_len = int.from_bytes(head, "little")
        # A pickle starts with PROTO (0x80); so may a safetensors header length (128 + 256k bytes): only a length
        # that the file cannot hold, or a header that is not JSON, makes a leading 0x80 a pickle.
        starts_json = head[:1] == b"\x80" and header_len <= size - 8 and f.read(1) == b"{"
        if head[:2] == b"PK" or (head[:1] == b"\x80" and not starts_json):
            raise ValueError(
                f"LoRA file {path.name!r} is a pickled PyTorch checkpoint, not safetensors; it is refused "
                "(unpickling can run code). Only .safetensors LoRA files are accepted."
            )
        f.seek(8)
        if len(head) < 8:
            raise ValueError(f"LoRA file {path.name!r} is truncated or empty ({size} bytes); re-download it.")
        if header_len > size - 8:
            first = f.read(1)
            if first != b"{":
                raise ValueError(f"LoRA file {path.name!r} is not a safetensors file (no JSON header).")
            raise ValueError(
                f"LoRA file {path.name!r} is truncated: its header needs {header_len} bytes, the file has {size}."
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"LoRA file {path.name!r} is not a valid safetensors file (bad header: {e}).") from e
    if not isinstance(header, dict):
        raise ValueError(f"LoRA file {path.name!r} is not a valid safetensors file (header is not a JSON object).")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        raise ValueError(
            f"LoRA file {path.name!r} is truncated: {size} bytes, but its header describes "
            f"{8 + header_len + end}; re-download it."
        )


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    _check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path), device="cpu"), metadata
    except SafetensorError as e:
        raise ValueError(f"LoRA file {path.name!r} could not be read as safetensors: {e}") from e


# ---------------------------------------------------------------------------------------------- naming


def _kohya_wan_to_original(key: str) -> str:
    """``lora_unet_blocks_0_self_attn_q.lora_down.weight`` -> ``diffusion_model.blocks.0.self_attn.q.lora_down...``"""
    name, _, tail = key.removeprefix("lora_unet_").partition(".")
    protected = name
    for i, token in enumerate(sorted(_WAN_UNDERSCORE_TOKENS, key=len, reverse=True)):
        protected = re.sub(rf"(^|_){token}(?=_|$)", rf"\g<1>@{i}@", protected)
    dotted = protected.replace("_", ".")
    for i, token in enumerate(sorted(_WAN_UNDERSCORE_TOKENS, key=len, reverse=True)):
        dotted = dotted.replace(f"@{i}@", token)
    return f"diffusion_model.{dotted}.{tail}"


def _file_alpha(raw: dict[str, torch.Tensor]) -> float | None:
    values = [float(v.item()) for k, v in raw.items() if k.endswith(".alpha") and v.numel() == 1]
    return collections.Counter(values).most_common(1)[0][0] if values else None


def _convert_original_wan(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original-Wan / kohya keys (``diffusion_model.`` prefix) through diffusers' converter (folds ``.alpha``)."""
    from diffusers.loaders import WanLoraLoaderMixin

    try:
        converted = WanLoraLoaderMixin.lora_state_dict(dict(raw))
    except (KeyError, ValueError) as e:
        raise ValueError(f"LoRA keys in the original Wan naming could not be converted: {e}") from e
    return {k.removeprefix("transformer."): v for k, v in converted.items()}


def _metadata_alpha_fn(metadata: dict[str, str]):
    """Alpha lookup from diffusers' ``lora_adapter_metadata`` (lora_alpha + alpha_pattern) or BLADE/kohya keys."""
    peft_meta: dict[str, Any] = {}
    if LORA_ADAPTER_METADATA_KEY in metadata:
        try:
            loaded = json.loads(metadata[LORA_ADAPTER_METADATA_KEY])
        except json.JSONDecodeError:
            logger.warning("Ignoring unreadable %s in LoRA metadata.", LORA_ADAPTER_METADATA_KEY)
            loaded = {}
        peft_meta = {k.removeprefix("transformer."): v for k, v in loaded.items()}
    default = peft_meta.get("lora_alpha")
    for key in (BLADE_PREFIX + "alpha", "alpha", "ss_network_alpha"):
        if default is None and metadata.get(key) not in (None, "", "None"):
            default = float(metadata[key])
    pattern = peft_meta.get("alpha_pattern") or {}

    def alpha_for(module: str) -> float | None:
        for pat, value in pattern.items():
            if re.match(rf"(.*\.)?({pat})$", module):
                return float(value)
        return None if default is None else float(default)

    return alpha_for, default


def _group_diffusers(
    raw: dict[str, torch.Tensor], metadata: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """diffusers/peft (or kohya on diffusers module paths) keys -> normalised dict and per-module alphas."""
    prefix_free = {}
    for key, value in raw.items():
        for prefix in ("base_model.model.", "transformer.", "diffusion_model."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        prefix_free[key] = value
    state: dict[str, torch.Tensor] = {}
    key_alphas: dict[str, float] = {}
    for key, value in prefix_free.items():
        if key.endswith(".alpha"):
            key_alphas[key[: -len(".alpha")]] = float(value.item())
            continue
        key = key.replace(".lora_down.", ".lora_A.").replace(".lora_up.", ".lora_B.")
        key = re.sub(r"\.lora_([AB])\.default\.", r".lora_\1.", key)  # peft adapter-named keys
        state[key] = value
    alpha_for, _ = _metadata_alpha_fn(metadata)
    alphas = {}
    for key in state:
        if key.endswith(_SUFFIX_A):
            module = key[: -len(_SUFFIX_A)]
            alpha = key_alphas.get(module, alpha_for(module))
            alphas[module] = float(state[key].shape[0]) if alpha is None else alpha
    return state, alphas


def normalise_lora_state_dict(
    raw: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, float], str]:
    """Any supported naming -> (normalised state dict, per-module alphas, source format)."""
    metadata = metadata or {}
    raw = {k: v for k, v in raw.items()}
    for extra in [k for k in raw if "dora_scale" in k or "lora_magnitude_vector" in k]:
        raise ValueError(f"DoRA LoRAs are not supported (found key {extra!r}); use a plain LoRA.")
    keys = list(raw)
    if any(k.startswith("lora_unet_blocks_") for k in keys):
        raw = {(_kohya_wan_to_original(k) if k.startswith("lora_unet_") else k): v for k, v in raw.items()}
    raw = {("diffusion_model." + k.removeprefix("model.diffusion_model.") if k.startswith("model.") else k): v
           for k, v in raw.items()}
    if raw and all(_WAN_ORIGINAL.search(k) or k.startswith("diffusion_model.") for k in raw) and any(
        _WAN_ORIGINAL.search(k) for k in raw
    ):
        raw = {(k if k.startswith("diffusion_model.") else "diffusion_model." + k): v for k, v in raw.items()}
        source = "kohya" if any(".lora_down." in k for k in raw) else "original_wan"
        state = _convert_original_wan(raw)
        alphas = {k[: -len(_SUFFIX_A)]: float(v.shape[0]) for k, v in state.items() if k.endswith(_SUFFIX_A)}
        return state, alphas, source
    source = "kohya" if any(".lora_down." in k or k.endswith(".alpha") for k in keys) else "diffusers"
    state, alphas = _group_diffusers(raw, metadata)
    return state, alphas, source


def _check_alphas(alphas: dict[str, float], name: str) -> None:
    """Alphas from metadata (kohya ``ss_network_alpha``, diffusers' ``lora_alpha``) must be finite numbers too."""
    bad = [m for m, a in alphas.items() if not math.isfinite(a)]
    if bad:
        raise ValueError(
            f"{name} is damaged: {len(bad)} of {len(alphas)} modules have a non-finite alpha in its metadata (e.g. "
            f"{', '.join(f'{m}={alphas[m]}' for m in bad[:3])}); re-download or re-export the LoRA."
        )


def _check_pairs(state: dict[str, torch.Tensor], name: str) -> None:
    if not any(k.endswith(_SUFFIX_A) for k in state):
        sample = ", ".join(list(state)[:3])
        raise ValueError(
            f"{name} holds no LoRA tensors (expected keys ending in lora_A/lora_B or lora_down/lora_up; "
            f"found e.g. {sample}). Is it a full model checkpoint rather than a LoRA?"
        )
    for key in state:
        if not key.endswith((_SUFFIX_A, _SUFFIX_B, _SUFFIX_BIAS)):
            raise ValueError(f"{name}: unsupported LoRA key {key!r}; valid endings: {_SUFFIX_A}, {_SUFFIX_B}, "
                             f"{_SUFFIX_BIAS}, .alpha.")
        module = key.rsplit(".lora_", 1)[0]
        partner = module + (_SUFFIX_B if key.endswith(_SUFFIX_A) else _SUFFIX_A)
        if partner not in state:
            raise ValueError(f"{name}: {key!r} has no matching {partner!r}; the file is incomplete.")


# ---------------------------------------------------------------------------------------------- family guess

# (label, pattern over raw or normalised keys); first hit wins, checked before the video families.
_OTHER_FAMILIES = (
    ("SDXL/SD1.5 (UNet)", re.compile(r"(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|lora_te\d?_)")),
    ("Flux/HunyuanVideo", re.compile(r"(single_transformer_blocks|double_blocks|single_blocks|img_attn)")),
    ("Flux/SD3", re.compile(r"transformer_blocks\.\d+\.attn\.(to_|add_)")),
    ("LTX-Video", re.compile(r"transformer_blocks\.\d+\.attn2\.")),
)
# Model width -> name, per family, to say which checkpoint a LoRA was made for.
KNOWN_DIMS: dict[str, dict[int, str]] = {name: dict(f.known_widths) for name, f in FAMILIES.items()}
FAMILY_LABELS = {name: f.short_label for name, f in FAMILIES.items()}


def guess_family(keys: list[str] | tuple[str, ...]) -> str | None:
    """Which model a LoRA's keys look like: a family name, another model's label, or None."""
    for label, pattern in _OTHER_FAMILIES:
        if any(pattern.search(k) for k in keys):
            return label
    for family in FAMILIES.values():
        if any(family.lora_keys.search(k) for k in keys):
            return family.name
    return None


def lora_width(lora: LoRAFile) -> int | None:
    """Model width the LoRA was made for: in_features of its attention query projections (else most common)."""
    widths = [v.shape[1] for k, v in lora.state_dict.items() if k.endswith("attn1.to_q" + _SUFFIX_A)]
    if not widths:
        widths = [v.shape[1] for k, v in lora.state_dict.items() if k.endswith(_SUFFIX_A)]
    return collections.Counter(widths).most_common(1)[0][0] if widths else None


# ---------------------------------------------------------------------------------------------- public


def is_blade_lora(metadata: dict[str, str], raw_keys: list[str] | tuple[str, ...], modules: list[str],
                  rank: int | None) -> bool:
    """A LoRA distilled by BLADE: it carries ``blade.*`` metadata (what ``training.distill`` writes), or it has the
    released files' layout: diffusers/peft keys under ``transformer.``, rank 64, on the attention projections only
    (to_q, to_k, to_v, to_out.0; REFERENCE.md, "Inference with a BLADE LoRA")."""
    if any(k.startswith(BLADE_PREFIX) for k in metadata):
        return True
    return (
        rank == BLADE_RELEASE_RANK
        and bool(raw_keys)
        and all(k.startswith("transformer.") and ".lora_" in k for k in raw_keys)
        and bool(modules)
        and all(m.endswith(_BLADE_TARGETS) for m in modules)
    )


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _info(path: Path | None, lora_state, alphas, source, raw_keys, metadata, key_alpha: float | None) -> LoRAInfo:
    ranks = [v.shape[0] for k, v in lora_state.items() if k.endswith(_SUFFIX_A)]
    rank = collections.Counter(ranks).most_common(1)[0][0] if ranks else None

    def meta(name: str, *others: str) -> str | None:
        for key in (BLADE_PREFIX + name, name, *others):
            if metadata.get(key) not in (None, ""):
                return metadata[key]
        return None

    _, meta_alpha = _metadata_alpha_fn(metadata)
    meta_alpha = key_alpha if meta_alpha is None else meta_alpha
    asa = meta("asa")
    try:
        asa_dict = json.loads(asa) if asa else None
    except json.JSONDecodeError:
        asa_dict = {"raw": asa}
    return LoRAInfo(
        source_format=source,
        family=guess_family(list(raw_keys)) or guess_family(list(lora_state)),
        rank=int(rank) if rank is not None else None,
        alpha=float(meta_alpha) if meta_alpha is not None else None,
        base_model=meta("base_model", "ss_base_model_version", "modelspec.architecture"),
        steps=_int_or_none(meta("steps")),
        training_steps=_int_or_none(meta("training_steps", "ss_max_train_steps")),
        asa=asa_dict,
        num_modules=len(ranks),
        num_params=sum(int(v.numel()) for v in lora_state.values()),
        path=str(path) if path is not None else None,
        metadata=dict(metadata),
        blade=is_blade_lora(metadata, raw_keys, [k[: -len(_SUFFIX_A)] for k in lora_state if k.endswith(_SUFFIX_A)],
                            rank),
    )


def read_lora(path: str | Path) -> LoRAFile:
    """Read a LoRA ``.safetensors`` file in diffusers/peft, kohya or original-Wan naming into a :class:`LoRAFile`.

    Raises FileNotFoundError for a missing file and ValueError for a pickled, truncated or non-LoRA file.
    """
    path = _resolve_path(path)
    raw, metadata = _load_safetensors(path)
    return lora_from_state_dict(raw, metadata, path=path)


def lora_from_state_dict(
    raw: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, *, path: str | Path | None = None
) -> LoRAFile:
    """Same as :func:`read_lora` for a state dict already in memory."""
    metadata = dict(metadata or {})
    name = f"LoRA file {Path(path).name!r}" if path is not None else "LoRA state dict"
    # One min/max pass over tensors already in memory (a LoRA is a few MB to a few hundred MB), before any naming
    # conversion folds a NaN ``.alpha`` into the factors; see blade_ops/finite.py.
    check_finite(raw, name)
    state, alphas, source = normalise_lora_state_dict(raw, metadata)
    _check_pairs(state, name)
    _check_alphas(alphas, name)
    info = _info(Path(path) if path else None, state, alphas, source, tuple(raw), metadata, _file_alpha(raw))
    return LoRAFile(state_dict=state, alphas=alphas, info=info, raw_keys=tuple(raw))


def _metadata_strings(metadata: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in metadata.items():
        if key in BLADE_METADATA_FIELDS:
            key = BLADE_PREFIX + key
        if value is None:
            continue
        out[str(key)] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def save_lora(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> Path:
    """Write a LoRA in BLADE's release naming (``transformer.<module>.lora_A.weight``) with metadata.

    ``state_dict`` holds peft keys relative to the transformer (``blocks.0.attn1.to_q.lora_A.weight``, as from
    ``peft.get_peft_model_state_dict``; a ``transformer.`` prefix or a ``.default`` adapter segment is accepted).
    ``metadata`` keys ``base_model, family, rank, alpha, steps, training_steps, asa`` are stored as ``blade.*``;
    rank and alpha also go into diffusers' ``lora_adapter_metadata`` so stock diffusers pipelines load the file
    with the right scale. Other keys are stored as given; non-string values as JSON.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"LoRA files are written as .safetensors; got {path.name!r}.")
    metadata = dict(metadata or {})
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = re.sub(r"\.lora_([AB])\.[^.]+\.(weight|bias)$", r".lora_\1.\2", key)
        key = key.removeprefix("transformer.")
        tensors["transformer." + key] = value.detach().to("cpu").contiguous()
    relative = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    _check_pairs(relative, f"LoRA to save at {str(path)!r}")
    ranks = collections.Counter(v.shape[0] for k, v in relative.items() if k.endswith(_SUFFIX_A))
    rank = int(metadata.get("rank") or ranks.most_common(1)[0][0])
    if len(ranks) == 1 and rank != next(iter(ranks)):
        raise ValueError(f"metadata rank={rank} does not match the tensors' rank {next(iter(ranks))}.")
    alpha = float(metadata.get("alpha") or rank)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number; got {alpha}.")
    metadata.setdefault("rank", rank)
    metadata.setdefault("alpha", alpha)
    modules = sorted({k[: -len(_SUFFIX_A)] for k in relative if k.endswith(_SUFFIX_A)})
    peft_meta = {
        "transformer.r": rank,
        "transformer.lora_alpha": alpha,
        "transformer.target_modules": modules,
        "transformer.rank_pattern": {
            f"^{m}": int(relative[m + _SUFFIX_A].shape[0]) for m in modules if relative[m + _SUFFIX_A].shape[0] != rank
        },
        "transformer.lora_bias": any(k.endswith(_SUFFIX_BIAS) for k in relative),
    }
    # Modules of another rank keep the same alpha/r ratio as the rest only if alpha scales with them; record the
    # alpha they are meant to have (the file-level alpha) explicitly.
    peft_meta["transformer.alpha_pattern"] = {k: alpha for k in peft_meta["transformer.rank_pattern"]}
    strings = _metadata_strings(metadata)
    strings[LORA_ADAPTER_METADATA_KEY] = json.dumps(peft_meta, sort_keys=True)
    strings["format"] = "pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=strings)
    logger.info("Saved LoRA (%d modules, rank %d, alpha %g) to %s", len(modules), rank, alpha, path)
    return path
