"""Load Wan (2.1, 2.2) / CogVideoX parts from diffusers folders or single safetensors files, offline.

Folders: a pipeline folder (model_index.json + transformer/, vae/, text_encoder/, tokenizer/, scheduler/) or
one part's folder (config.json). Read with diffusers/transformers ``from_pretrained(..., use_safetensors=True,
local_files_only=True)`` so nothing is fetched and no pickle is opened.

Single files: the original Wan layout (ComfyUI's repackaged files, optionally under ``model.diffusion_model.``),
diffusers keys, CogVideoX's SAT layout, and combined checkpoints holding transformer and VAE; bf16, fp16, fp32 or
ComfyUI's fp8_scaled weights (dequantised on load, see quantized.py). The file is
recognised from its header alone, converted to diffusers keys on meta tensors to pick or infer the config and to
check every key and shape, and only then read. The model is built without allocating weights
(``init_empty_weights``) and takes the file's tensors directly (``load_state_dict(assign=True)``), so a 14B
checkpoint is held in memory once.

Cancel: the loaders take ``check_cancel``, a function called before each part's file or folder is read and between
groups of tensors of a single file (about :data:`READ_GROUP_BYTES` each); raising in it (e.g. ComfyUI's interrupt)
stops the load, and nothing read so far is kept or cached.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..families import FAMILIES, WAN, ModelFamily, candidate_families, family_of_pipeline, get_family
from ..finite import check_finite_module
from ..validation import DTYPE_NAMES
from .bundle import ModelBundle
from .detect import Sniff, describe_foreign, sniff
from .files import PICKLE_SUFFIXES, load_tensors, read_header, read_shapes
from .placement import auto_dtype, check_offload, place, resolve_device
from .quantized import check_supported_quantization, dequantize, is_quantization_extra, scale_keys
from .variants import (
    DEFAULT_VARIANT,
    VARIANTS,
    config_from_structure,
    get_variant,
    match_variant,
    shipped_config,
    structure_from_config,
)

logger = logging.getLogger(__name__)

DEFAULT_PARTS = ("transformer", "vae", "text_encoder", "tokenizer")
ALL_PARTS = DEFAULT_PARTS + ("scheduler",)
DTYPES = {name: getattr(torch, torch_name) for name, torch_name in DTYPE_NAMES.items()}  # "bf16" and "bfloat16"

# diffusers / transformers class names each family adapter names, by role. Families sharing an architecture share
# class names: a class maps to the architecture's first family, and the config or shapes decide between them.
PIPELINE_CLASSES: dict[str, str] = {}
MODEL_CLASSES: dict[str, tuple[str, str]] = {}
TEXT_ENCODER_CLASSES: dict[str, str] = {}
for _f in FAMILIES.values():
    for _c in _f.pipeline_classes:
        PIPELINE_CLASSES.setdefault(_c, _f.name)
    for _part, _classes in (("transformer", _f.transformer_classes), ("vae", _f.vae_classes)):
        for _c in _classes:
            MODEL_CLASSES.setdefault(_c, (_f.name, _part))
    for _c in _f.text_encoder_classes:
        TEXT_ENCODER_CLASSES.setdefault(_c, _f.name)
_CLASS_FOR = {
    (f.name, part): classes[0]
    for f in FAMILIES.values()
    for part, classes in (("transformer", f.transformer_classes), ("vae", f.vae_classes))
}
# The pack's own model classes a folder may name (``_class_name``): (family, part, module). The toy domain's
# pixel VAE stands in for the VAE of a Wan-architecture model.
PACK_MODEL_CLASSES = {"PixelVAE": (WAN.name, "vae", "blade_ops.models.pixel_vae")}

PathLike = str | Path
ConfigLike = dict | str | Path | None
CancelCheck = Callable[[], None] | None

#: Bytes of a single file read between two ``check_cancel`` calls.
READ_GROUP_BYTES = 512 * 2**20


@dataclass
class LoadedPart:
    """A loaded module with what it is: family, shipped variant (None when its config was inferred), source."""

    module: torch.nn.Module
    family: str
    variant: str | None
    source: str


# ------------------------------------------------------------------------------------------------- helpers
def resolve_dtype(dtype: torch.dtype | str, device: str | torch.device | None = None) -> torch.dtype:
    """torch dtype from a dtype, a name in either spelling ("bf16"/"bfloat16", "fp16"/"float16", "fp32"/"float32"),
    or "auto": what the command line picks for ``device`` (bf16 on CUDA, fp32 elsewhere)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.lower() == "auto":
        return auto_dtype(device)
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(
        f"Unsupported dtype {dtype!r}; valid: auto, {', '.join(DTYPES)} (or torch.bfloat16/float16/float32)."
    )


def _family_name(family: str | None) -> str | None:
    return None if family is None else get_family(family).name


def _model_class(family: str, part: str, class_name: str | None = None):
    """The diffusers class of a family's part, or the pack's own class a folder's config names."""
    if class_name in PACK_MODEL_CLASSES:
        from .pixel_vae import PixelVAE

        return {"PixelVAE": PixelVAE}[class_name]
    import diffusers

    return getattr(diffusers, _CLASS_FOR[(family, part)])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable JSON file ({err}).") from None


def _overrides(config: ConfigLike) -> dict:
    """``config`` as a dict of config values: a dict, a config.json path or a folder holding one."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    path = Path(config).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"Config not found: {path}; expected a config.json file or a folder holding one.")
    return {k: v for k, v in _read_json(path).items() if not k.startswith("_")}


def _short(items, n: int = 5) -> str:
    items = sorted(items)
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


# ------------------------------------------------------------------------------------------------ folders
def _classify_folder(path: Path) -> tuple[str, str]:
    """(kind, family) of a diffusers folder: kind is "pipeline" or a part name. A part folder's family is the first
    that accepts its config (the architecture's first family when none does: loading it then says why)."""
    if (path / "model_index.json").is_file():
        index = _read_json(path / "model_index.json")
        family = family_of_pipeline(index)
        if family is None:
            raise ValueError(
                f"{path} is a diffusers pipeline of class {index.get('_class_name')!r}; expected one of "
                f"{', '.join(PIPELINE_CLASSES)} (text-to-video of {', '.join(_architecture_labels())})."
            )
        return "pipeline", family.name
    if (path / "config.json").is_file():
        cfg = _read_json(path / "config.json")
        cls = cfg.get("_class_name")
        if cls in MODEL_CLASSES:
            family, part = MODEL_CLASSES[cls]
            chosen = _family_from_config(family, part, cfg, None)[0]
            return part, (chosen or get_family(family)).name
        if cls in PACK_MODEL_CLASSES:
            family, part, _ = PACK_MODEL_CLASSES[cls]
            return part, family
        arch = (cfg.get("architectures") or [None])[0]
        if arch in TEXT_ENCODER_CLASSES:
            return "text_encoder", TEXT_ENCODER_CLASSES[arch]
        raise ValueError(
            f"{path / 'config.json'} is for {cls or arch or 'an unknown model'}; expected one of "
            f"{', '.join(list(MODEL_CLASSES) + list(TEXT_ENCODER_CLASSES))}."
        )
    raise FileNotFoundError(
        f"{path} holds neither model_index.json nor config.json; expected a diffusers folder (model_index.json with "
        "transformer/, vae/, text_encoder/, tokenizer/ subfolders) or one part's folder (config.json + safetensors)."
    )


def _check_folder_weights(path: Path) -> None:
    """Every safetensors file of a part folder is complete; a folder of pickles only is refused."""
    tensors = sorted(path.glob("*.safetensors"))
    if not tensors:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        found = f"only pickle weights ({', '.join(pickles[:3])})" if pickles else "no weight files"
        raise FileNotFoundError(
            f"{path} has {found}; BLADE reads only .safetensors weights (a pickle can run arbitrary code). "
            "Convert the weights to safetensors or download the safetensors release."
        )
    for f in tensors:
        read_header(f)


def _architecture_labels() -> list[str]:
    """One label per architecture (its first family's): what an unrecognised file is compared with."""
    return list(dict.fromkeys(get_family(f.arch).label for f in FAMILIES.values()))


def _family_from_config(
    found: str, part: str, cfg: dict, requested: str | None, experts: int | None = None
) -> tuple[ModelFamily | None, dict | None]:
    """(family, structure) of a part's config among ``found``'s architecture; (None, structure or None) when no
    candidate family accepts it."""
    structure = None
    for family in candidate_families(found, requested, experts):
        try:
            structure = family.structure_from_config(part, cfg)
        except KeyError:
            continue
        if family.accepts(part, structure):
            return family, structure
    return None, structure


def _part_folder(path: Path, part: str, subfolder: str | None = None) -> tuple[Path, str, str]:
    """(folder, family, kind of ``path``): the folder of ``part`` inside a pipeline folder (``subfolder``, e.g. an
    expert's name, defaults to the part's name), or ``path`` itself when it is that part's folder."""
    kind, family = _classify_folder(path)
    if kind == part:
        return path, family, kind
    if kind == "pipeline":
        sub = path / (subfolder or part)
        if not sub.is_dir():
            name = subfolder or part
            raise FileNotFoundError(f"{path} has no {name}/ subfolder; expected a diffusers folder with {name}/.")
        return sub, family, kind
    raise ValueError(f"{path} is a {family} {kind} folder, not a {part} folder or a pipeline folder.")


def _check(check_cancel: CancelCheck) -> None:
    if check_cancel is not None:
        check_cancel()


def _load_folder_part(
    path: Path, part: str, family: str | None, dtype, device, check_cancel: CancelCheck = None,
    subfolder: str | None = None,
) -> LoadedPart:
    folder, found, kind = _part_folder(path, part, subfolder)
    cfg = _read_json(folder / "config.json")
    class_name = cfg.get("_class_name")
    if kind == "pipeline" or class_name in PACK_MODEL_CLASSES:  # the pipeline (or the pack's class) says the family
        if family is not None and found != family:
            raise ValueError(f"{folder} holds a {found} {part}, not a {family} one.")
    else:  # a part folder: the family the caller names (or any detected one) must accept its config
        chosen, structure = _family_from_config(found, part, cfg, family)
        if chosen is None:
            raise ValueError(f"{folder} holds a {found} {part}, not a {family or found} one ({structure}).")
        found = chosen.name
    _check_folder_weights(folder)
    _check(check_cancel)
    cls = _model_class(found, part, class_name)
    module = cls.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True, local_files_only=True).eval()
    check_finite_module(module, f"The {part} folder {folder}")  # one min/max pass, see blade_ops/finite.py
    if class_name in PACK_MODEL_CLASSES:
        variant = None  # not a released model: no shipped variant to match
    else:
        matches = match_variant(found, part, structure_from_config(found, part, dict(module.config)))
        variant = matches[0] if len(matches) == 1 else None
    return LoadedPart(place(module, device), found, variant, str(folder))


# ------------------------------------------------------------------------------------------- single files
def _meta(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


# Prefixes of the other parts of a combined (ComfyUI "checkpoint") file, left out when a part has no prefix.
_OTHER_PART_PREFIXES = ("first_stage_model.", "vae.", "cond_stage_model.", "conditioner.", "text_encoders.", "model.")


def _part_keys(shapes: dict, found: Sniff) -> list[str]:
    """The part's weight keys (with prefix); fp8_scaled scales and markers are read separately (quantized.py)."""
    if found.prefix:
        keys = [k for k in shapes if k.startswith(found.prefix)]
    else:
        keys = [k for k in shapes if not k.startswith(_OTHER_PART_PREFIXES)]
    return [k for k in keys if not is_quantization_extra(k, found.prefix)]


def _to_diffusers(found: Sniff, family: ModelFamily, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if found.layout == "diffusers":
        return state_dict
    converted = family.to_diffusers_keys(found.part, found.layout, state_dict)
    if converted is None:
        raise ValueError(f"no converter for a {found.description}")
    return converted


def _find_part(path: Path, keys, part: str, family: str | None) -> Sniff:
    found = sniff(keys)
    mine = [s for s in found if s.part == part]
    if family is not None and mine and get_family(mine[0].family).arch != get_family(family).arch:
        raise ValueError(
            f"{path} holds a {mine[0].description}, not a {FAMILIES[family].name} {part}. Use a {family} file or "
            f"pass family={mine[0].family!r}."
        )
    if mine:
        return mine[0]
    if found:
        other = found[0]
        raise ValueError(
            f"{path} holds a {other.description}, not a {part}; load it with load_{other.part}() instead."
        )
    want = " or ".join(_architecture_labels()) if family is None else get_family(family).label
    example = {
        "transformer": "'blocks.0.self_attn.q.weight' (Wan) or 'transformer_blocks.0.attn1.to_q.weight' (CogVideoX)",
        "vae": "'decoder.middle.0.residual.0.gamma' (Wan) or 'decoder.conv_in.conv.weight' (CogVideoX)",
    }[part]
    raise ValueError(
        f"{path} is not a {want} {part}: it looks like {describe_foreign(keys)}. Expected keys such as {example}."
    )


def _variant_family(variant: str | None, found: Sniff) -> str | None:
    """The family a named variant implies for a file of ``found``'s architecture (None: no variant, or another
    architecture's, which :func:`_resolve_config` reports)."""
    if variant is None:
        return None
    family = get_variant(variant).family
    return family if get_family(family).arch == get_family(found.family).arch else None


def _identify(
    path: Path, found: Sniff, part: str, meta: dict[str, torch.Tensor], requested: str | None,
    experts: int | None = None,
) -> tuple[ModelFamily, dict[str, tuple[int, ...]], dict]:
    """(family, diffusers-key shapes, structure) of a part: the first candidate family (see
    :func:`~blade_ops.families.candidate_families`) whose key converter and structure read the shapes and which
    accepts them."""
    missing: dict[str, KeyError] = {}
    rejected: list[tuple[ModelFamily, dict]] = []
    for family in candidate_families(found.family, requested, experts):
        try:
            shapes = {k: tuple(v.shape) for k, v in _to_diffusers(found, family, meta).items()}
            structure = family.structure_from_shapes(part, shapes)
        except KeyError as err:
            missing[family.name] = err
            continue
        except ValueError as err:
            raise ValueError(f"{path} looks like {err}.") from None
        if family.accepts(part, structure):
            return family, shapes, structure
        rejected.append((family, structure))
    if requested is not None:  # say what the part is when it belongs to another family of the architecture
        try:
            other = _identify(path, found, part, meta, None)[0]
        except ValueError:
            other = None
        if other is not None:
            label = get_family(requested).label
            raise ValueError(
                f"{path} holds a {other.label} {part} ({found.layout} key layout), not a {label} one; load the "
                f"{part} made for {label}."
            )
    if not rejected and missing:
        err = missing.get(found.family) or next(iter(missing.values()))
        raise ValueError(
            f"{path} looks like a {found.description} but lacks {err.args[0]}; the file is incomplete or of "
            f"another model. Some of its keys: {_short(meta)}."
        )
    raise _unsupported(path, found, part, rejected, requested)


def _unsupported(
    path: Path, found: Sniff, part: str, rejected: list[tuple[ModelFamily, dict]], requested: str | None
) -> ValueError:
    """The error for a part no candidate family accepts: what its channels are and what the families take."""
    structure = rejected[0][1] if rejected else {}
    if part == "transformer":
        what, channels = "input channels", structure.get("in_channels")
    else:
        what, channels = "latent channels", structure.get("z_dim", structure.get("latent_channels"))
    if requested is not None:
        family = get_family(requested)
        takes = f"{family.label} takes {family.latent_channels}"
    else:
        groups: dict[int, list[str]] = {}
        for family in FAMILIES.values():
            if _same_arch(family.name, found.family):
                groups.setdefault(family.latent_channels, []).append(family.label)
        takes = "BLADE's text-to-video models take " + " or ".join(
            f"{c} ({', '.join(labels)})" for c, labels in groups.items()
        )
    extra = " (an image-to-video model has more)" if part == "transformer" else ""
    return ValueError(f"{path} is a {found.description} with {channels} {what}; {takes}{extra}.")


def _resolve_config(
    path: Path, found: Sniff, part: str, structure: dict, overrides: dict, variant: str | None, strict: bool = True
) -> tuple[dict, str | None]:
    """(config, shipped variant or None). ``variant`` is asserted when ``strict``, else only preferred."""
    family = found.family
    matches = match_variant(family, part, structure)
    if variant is not None and get_variant(variant).family != family:
        raise ValueError(f"variant {variant!r} is a {get_variant(variant).family} model but {path} is {family}.")
    if variant is not None and matches and variant not in matches:
        # The file is another shipped variant: an error when the caller asserted it, ignored when only preferred.
        if strict:
            raise ValueError(
                f"{path} does not have the shapes of variant {variant!r} ({structure}); it matches "
                f"{', '.join(matches)}."
            )
        variant = None
    if matches:
        name = variant or (DEFAULT_VARIANT[family] if DEFAULT_VARIANT[family] in matches else matches[0])
        cfg = shipped_config(name, part)
        cfg.update(overrides)
        return cfg, name
    # No shipped variant has these shapes: ``variant`` (or the family default) supplies the unseen settings.
    try:
        cfg = config_from_structure(family, part, structure, overrides, base_variant=variant)
    except ValueError as err:
        raise ValueError(f"{path}: {err}.") from None
    logger.info(
        "%s matches no shipped variant (%s); using a config inferred from its shapes: %s",
        path,
        ", ".join(v for v in VARIANTS if VARIANTS[v].family == family),
        structure,
    )
    return cfg, None


def _build(cls, cfg: dict, path: Path, origin: str):
    from accelerate import init_empty_weights

    try:
        with init_empty_weights(include_buffers=False):
            return cls.from_config(cfg)
    except (ValueError, TypeError, RuntimeError, AssertionError) as err:
        raise ValueError(
            f"{path}: cannot build {cls.__name__} from the {origin} config ({err}); pass config={{...}} with the "
            "right values (settings no tensor shape reveals, e.g. norm_num_groups, num_attention_heads) or a "
            "config.json."
        ) from None


def _check_fit(path: Path, found: Sniff, model, shapes: dict, config_origin: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = expected.keys() - shapes.keys()
    unexpected = shapes.keys() - expected.keys()
    wrong = [
        f"{k}: file {shapes[k]} vs model {expected[k]}"
        for k in expected.keys() & shapes.keys()
        if shapes[k] != expected[k]
    ]
    if not (missing or unexpected or wrong):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {_short(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {_short(unexpected)})")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(sorted(wrong)[:3])})")
    raise ValueError(
        f"{path} has an unexpected layout for a {found.description} with the {config_origin} config: "
        + "; ".join(problems)
        + ". The file may be damaged, partial, or a different model; a fine-tune with other settings needs "
        "config={...}."
    )


def _keep_fp32(cls, name: str) -> bool:
    keep = getattr(cls, "_keep_in_fp32_modules", None) or []
    return any(m in name.split(".") for m in keep)


def _read_tensors(path: Path, keys: list[str], check_cancel: CancelCheck) -> dict[str, torch.Tensor]:
    """``keys`` of a safetensors file, read in groups of about READ_GROUP_BYTES with ``check_cancel`` before each."""
    if check_cancel is None:
        return load_tensors(path, keys)
    header = read_header(path)
    groups: list[list[str]] = [[]]
    size = 0
    for key in keys:
        start, end = header[key]["data_offsets"]
        if groups[-1] and size + (end - start) > READ_GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += end - start
    tensors: dict[str, torch.Tensor] = {}
    for group in groups:
        check_cancel()
        tensors.update(load_tensors(path, group))
    return tensors


def _load_file_part(
    path: Path,
    part: str,
    family: str | None,
    config: ConfigLike,
    variant: str | None,
    dtype,
    device,
    strict: bool,
    check_cancel: CancelCheck = None,
    experts: int | None = None,
) -> LoadedPart:
    shapes_all = read_shapes(path)
    check_supported_quantization(path, shapes_all)
    found = _find_part(path, shapes_all, part, family)
    file_keys = _part_keys(shapes_all, found)
    strip = len(found.prefix)
    requested = family or _variant_family(variant, found)
    meta = _meta({k[strip:]: shapes_all[k] for k in file_keys})
    fam, shapes, structure = _identify(path, found, part, meta, requested, experts)
    found = dataclasses.replace(found, family=fam.name)
    cfg, name = _resolve_config(path, found, part, structure, _overrides(config), variant, strict)
    cls = _model_class(found.family, part)
    origin = f"shipped {name}" if name else "inferred"
    model = _build(cls, cfg, path, origin)
    _check_fit(path, found, model, shapes, origin + (" (with overrides)" if config else ""))
    read = _read_tensors(path, file_keys + scale_keys(file_keys, shapes_all), check_cancel)
    tensors = _to_diffusers(found, fam, dequantize({k[strip:]: v for k, v in read.items()}))  # fp8_scaled: w * scale
    # Match diffusers' from_pretrained: modules it keeps in fp32 (Wan's norms, time embedding) stay fp32. Always
    # copy: safetensors hands out views of the memory-mapped file at unaligned offsets, which keeps the file mapped
    # and makes CPU kernels take slower paths with (slightly) different rounding.
    tensors = {
        k: v.to(dtype=torch.float32 if _keep_fp32(cls, k) else dtype, copy=True)
        if v.is_floating_point()
        else v.clone()
        for k, v in tensors.items()
    }
    model.load_state_dict(tensors, strict=True, assign=True)
    model.eval()
    logger.info("loaded %s from %s (%s config)", found.description, path, origin)
    return LoadedPart(place(model, device), found.family, name, str(path))


def _load_part(
    path: PathLike, part: str, family, config, variant, dtype, device, strict: bool = True,
    check_cancel: CancelCheck = None, subfolder: str | None = None, experts: int | None = None,
) -> LoadedPart:
    """One part from a folder (``subfolder``: which folder of a pipeline, e.g. an expert's) or a single file
    (``experts``: how many transformers the caller holds, so that a family with that many is considered)."""
    path = Path(path).expanduser()
    family = _family_name(family)
    dtype = resolve_dtype(dtype)
    _check(check_cancel)
    if path.is_dir():
        if config is not None:
            raise ValueError(f"config= applies to single files; {path} is a folder with its own config.json.")
        return _load_folder_part(path, part, family, dtype, device, check_cancel, subfolder)
    return _load_file_part(path, part, family, config, variant, dtype, device, strict, check_cancel, experts)


# ------------------------------------------------------------------------------------------------ public
def _identify_file(path: Path, part: str | None) -> tuple[Sniff, ModelFamily, dict]:
    """(sniff, family, structure) of a single file's ``part`` (None: the first part it holds), from its header."""
    shapes_all = read_shapes(path)
    if part is None:
        found = sniff(shapes_all)
        if not found:
            raise ValueError(
                f"{path} is not a {' or '.join(_architecture_labels())} model file: it looks like "
                f"{describe_foreign(shapes_all)}."
            )
        part = found[0].part
    found = _find_part(path, shapes_all, part, None)
    strip = len(found.prefix)
    meta = _meta({k[strip:]: shapes_all[k] for k in _part_keys(shapes_all, found)})
    family, _, structure = _identify(path, found, part, meta, None)
    return found, family, structure


def detect_family(path: PathLike) -> str:
    """The family name of a diffusers folder (model_index.json / config.json) or a safetensors file (a file no
    family accepts gets its architecture's first family: loading it says why it does not fit)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _classify_folder(path)[1]
    try:
        return _identify_file(path, None)[1].name
    except ValueError:
        found = sniff(read_shapes(path))
        if not found:
            raise
        return found[0].family


def detect_variant(path: PathLike, part: str = "transformer") -> str | None:
    """The shipped variant a transformer (or VAE) file or folder matches, None when it matches none."""
    path = Path(path).expanduser()
    if path.is_dir():
        folder, family, _ = _part_folder(path, part)
        cfg = _read_json(folder / "config.json")
        matches = match_variant(family, part, structure_from_config(family, part, cfg))
    else:
        _, fam, structure = _identify_file(path, part)
        family = fam.name
        matches = match_variant(family, part, structure)
    if not matches:
        return None
    return DEFAULT_VARIANT[family] if DEFAULT_VARIANT[family] in matches else matches[0]


def load_transformer(
    path: PathLike,
    *,
    family: str | None = None,
    config: ConfigLike = None,
    variant: str | None = None,
    dtype: torch.dtype | str = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """WanTransformer3DModel / CogVideoXTransformer3DModel from a diffusers folder or a single safetensors file.

    ``config`` (single files only): dict of config values, or a config.json (or its folder), applied over the
    shipped or inferred config. ``variant`` asserts which shipped variant the file is (e.g. "wan2.1-t2v-14b").
    """
    return _load_part(path, "transformer", family, config, variant, dtype, device).module


def load_vae(
    path: PathLike,
    *,
    family: str | None = None,
    config: ConfigLike = None,
    variant: str | None = None,
    dtype: torch.dtype | str = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """AutoencoderKLWan / AutoencoderKLCogVideoX from a folder or a single file.

    CogVideoX-2B and -5B share VAE weights but not the latent scaling factor (1.15258426 vs 0.7): ``variant``
    picks it (default "cogvideox-5b"); ``load_model_bundle`` passes the transformer's variant.
    """
    return _load_part(path, "vae", family, config, variant, dtype, device).module


def load_text_encoder(
    path: PathLike,
    *,
    dtype: torch.dtype | str = torch.bfloat16,
    device: str | torch.device = "cpu",
    check_cancel: CancelCheck = None,
) -> tuple[torch.nn.Module, object]:
    """(encoder, tokenizer) from a pipeline folder, or a text_encoder folder with tokenizer files in it or beside it.

    UMT5 for Wan, T5 v1.1 for CogVideoX; only safetensors weights are read. ``check_cancel`` runs before the
    encoder's weights and before the tokenizer files are read (see the module docstring).
    """
    from transformers import AutoTokenizer, T5EncoderModel, UMT5EncoderModel

    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"{path} is not a folder; text encoders load from a diffusers folder (text_encoder/ and tokenizer/) "
            "or a text_encoder folder (config.json + safetensors)."
        )
    folder, family, _ = _part_folder(path, "text_encoder")
    cfg = _read_json(folder / "config.json")
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in TEXT_ENCODER_CLASSES:
        raise ValueError(f"{folder} holds a {arch!r}; expected one of {', '.join(TEXT_ENCODER_CLASSES)}.")
    _check_folder_weights(folder)
    _check(check_cancel)
    cls = UMT5EncoderModel if arch == "UMT5EncoderModel" else T5EncoderModel
    encoder = cls.from_pretrained(folder, dtype=resolve_dtype(dtype), use_safetensors=True, local_files_only=True)
    check_finite_module(encoder, f"The text_encoder folder {folder}")
    tok_dirs = [d for d in (folder.parent / "tokenizer", folder) if (d / "tokenizer_config.json").is_file()]
    if not tok_dirs:
        raise FileNotFoundError(
            f"No tokenizer next to {folder}: expected {folder.parent / 'tokenizer'} or tokenizer files in {folder}."
        )
    _check(check_cancel)
    tokenizer = AutoTokenizer.from_pretrained(tok_dirs[0], local_files_only=True)
    return place(encoder.eval(), device), tokenizer


def _same_arch(a: str, b: str) -> bool:
    return get_family(a).arch == get_family(b).arch


def _load_experts(
    path: Path, family: ModelFamily, expert_paths: dict[str, Path], config, dtype, home, check_cancel,
    sources: dict[str, str],
) -> dict[str, torch.nn.Module]:
    """The transformers after the first of a family with several (its pipeline folder's subfolders, or the files
    of ``expert_paths``), each checked to be a transformer of the same family."""
    names = family.expert_names[1:]
    unknown = sorted(set(expert_paths) - set(names))
    if unknown:
        runs = f"runs the experts {', '.join(family.expert_names)}" if names else "runs one transformer"
        raise ValueError(f"{family.label} {runs}; expert_paths names {unknown}.")
    out = {}
    for name in names:
        pipeline = path.is_dir() and (path / "model_index.json").is_file()
        source = expert_paths.get(name, path if pipeline else None)
        if source is None:
            labels = dict(zip(family.expert_names, family.expert_labels, strict=True))
            raise ValueError(
                f"{family.label} runs {len(family.expert_names)} transformers ({', '.join(family.expert_names)}), "
                f"{path} is one of them. Pass expert_paths={{'{name}': ...}} with the {labels[name]} expert's file, "
                "or load the model's diffusers folder."
            )
        got = _load_part(source, "transformer", family.name, config if source.is_file() else None, None, dtype,
                         home, check_cancel=check_cancel, subfolder=name)
        out[name], sources[name] = got.module, got.source
    return out


def load_model_bundle(
    path: PathLike,
    *,
    family: str | None = None,
    parts: tuple[str, ...] | list[str] = DEFAULT_PARTS,
    vae_path: PathLike | None = None,
    text_encoder_path: PathLike | None = None,
    config: ConfigLike = None,
    dtype: torch.dtype | str = "auto",
    device: str | torch.device = "cpu",
    offload: str = "none",
    check_cancel: CancelCheck = None,
    expert_paths: dict[str, PathLike] | None = None,
) -> ModelBundle:
    """Load the requested ``parts`` of one model into a :class:`ModelBundle`.

    ``path`` is a diffusers folder (every part) or a transformer single file (a combined checkpoint may also hold
    the VAE). ``vae_path`` / ``text_encoder_path`` supply parts from elsewhere (a VAE file, a text encoder
    folder). A family with several transformers (experts, e.g. Wan2.2 A14B's high- and low-noise models) reads
    them from the pipeline folder's subfolders, or from ``expert_paths`` ({"transformer_2": file}) when ``path`` is
    the first expert's single file. With ``offload="model"`` parts stay on the CPU and go to ``device`` only while
    they work (``bundle.using(part)``); with "none" they are placed on ``device`` now. ``config`` applies to a
    single-file transformer. The scheduler config is read whenever the folder has one. ``check_cancel`` runs between
    files (see the module docstring).

    ``device="auto"`` is CUDA when available, else the CPU. ``dtype="auto"`` (the default) is what the command line
    picks for that device: bf16 on CUDA, fp32 on the CPU, so the same seed gives the same video from both.
    """
    check_offload(offload)
    unknown = [p for p in parts if p not in ALL_PARTS]
    if unknown:
        raise ValueError(f"Unknown model parts {unknown}; valid parts: {', '.join(ALL_PARTS)}.")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Model path not found: {path}; expected a diffusers folder or a .safetensors file.")
    family = _family_name(family)
    expert_paths = {k: Path(v).expanduser() for k, v in (expert_paths or {}).items()}
    home = "cpu" if offload == "model" else device
    sources: dict[str, str] = {}
    transformer = vae = encoder = tokenizer = scheduler = None
    experts: dict[str, torch.nn.Module] = {}
    variant = None

    if path.is_dir():
        kind, found_family = _classify_folder(path)
        same = found_family == family if kind == "pipeline" else family is None or _same_arch(found_family, family)
        if family is not None and not same:
            raise ValueError(f"{path} holds a {found_family} model, not a {family} one.")
        family = family or found_family
    elif "vae" in parts and "transformer" not in parts:
        family = family or detect_family(path)

    if "transformer" in parts:
        count = 1 + len(expert_paths) if expert_paths else None
        got = _load_part(path, "transformer", family, config, None, dtype, home, check_cancel=check_cancel,
                         experts=count)
        transformer, variant, sources["transformer"] = got.module, got.variant, got.source
        family = got.family
        experts = _load_experts(path, get_family(family), expert_paths, config, dtype, home, check_cancel, sources)
    elif expert_paths:
        raise ValueError(f"expert_paths={sorted(expert_paths)} needs 'transformer' in parts.")
    if "vae" in parts:
        vae_src = Path(vae_path).expanduser() if vae_path is not None else path
        vae_variant = variant if variant is not None and VARIANTS[variant].family == family else None
        try:
            # The transformer's variant picks the VAE config (CogVideoX 2B/5B latent scaling) when it fits.
            got = _load_part(vae_src, "vae", family, None, vae_variant, dtype, home, strict=False,
                             check_cancel=check_cancel)
        except ValueError as err:
            if vae_path is None and path.is_file() and "transformer" in parts:  # the VAE was looked for in its file
                raise ValueError(f"{err} Pass vae_path= with the VAE's file or folder.") from None
            raise
        vae, sources["vae"] = got.module, got.source
        family = family or got.family
    if "text_encoder" in parts or "tokenizer" in parts:
        te_src = Path(text_encoder_path).expanduser() if text_encoder_path is not None else path
        if text_encoder_path is not None and te_src.is_file():  # a ComfyUI text_encoders file
            from .text_encoder_file import load_text_encoder_file

            _check(check_cancel)
            enc, tok, _ = load_text_encoder_file(te_src, dtype=dtype, device=home)
        elif te_src.is_dir():
            enc, tok = load_text_encoder(te_src, dtype=dtype, device=home, check_cancel=check_cancel)
        else:
            raise ValueError(
                f"{te_src} holds no text encoder: pass text_encoder_path= with a diffusers folder (or its "
                "text_encoder/ folder) or a text_encoders .safetensors file, or leave text_encoder/tokenizer out of "
                "parts."
            )
        known = type(enc).__name__ in TEXT_ENCODER_CLASSES
        if family is not None and known and type(enc).__name__ not in get_family(family).text_encoder_classes:
            raise ValueError(
                f"{te_src} holds a {type(enc).__name__}, the text encoder of another family than {family}."
            )
        encoder = enc if "text_encoder" in parts else None
        tokenizer = tok if "tokenizer" in parts else None
        sources["text_encoder"] = str(te_src)
    if path.is_dir() and (path / "scheduler" / "scheduler_config.json").is_file():
        scheduler = _read_json(path / "scheduler" / "scheduler_config.json")
        sources["scheduler"] = str(path / "scheduler")

    if family is None:
        raise ValueError(f"Could not tell the model family of {path}; pass family= ({', '.join(FAMILIES)}).")
    return ModelBundle(
        family=get_family(family),
        transformer=transformer,
        **experts,
        vae=vae,
        text_encoder=encoder,
        tokenizer=tokenizer,
        scheduler_config=scheduler,
        variant=variant,
        dtype=dtype,
        sources=sources,
        device=str(device),
        offload=offload,
    )
