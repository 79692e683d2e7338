"""What a user asks for, checked one way for the command line, the Python API (GenerationRequest) and the nodes.

Torch-free on purpose: the command line runs these checks on its arguments before it imports torch, so a wrong
value is answered at once, not after seconds of imports or minutes of weight loading.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# Seeds: torch.Generator.manual_seed takes any unsigned 64-bit value and ComfyUI's seed widgets go up to 2**64 - 1,
# so the command line, the API and the nodes all accept exactly this range and a seed from one runs in the others.
SEED_MIN = 0
SEED_MAX = 2**64 - 1

# Weight dtypes in both spellings, the short one (ComfyUI, config files) and torch's name -> torch's name.
DTYPE_NAMES = {
    "fp32": "float32", "float32": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16",
}

# Names of the built-in samplers and presets, for command-line choices without importing the registries (which
# import torch); tests/pipeline/test_cli.py checks they equal blade_ops.sampling / blade_ops.pipeline.presets.
SAMPLER_NAMES = ("blade", "tdm", "baseline")
PRESET_NAMES = ("blade", "baseline")

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
MAX_GUIDANCE = 50.0


def check_seed(seed: object) -> int:
    """``seed`` as an int in [SEED_MIN, SEED_MAX]; ValueError naming the range otherwise."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"seed={seed!r} must be an integer in [{SEED_MIN}, 2**64 - 1 = {SEED_MAX}].")
    return seed


def check_prompts(prompt: object, name: str = "prompt") -> list[str]:
    """A prompt (string) or prompts (non-empty list of strings) as a list; an empty or blank prompt is refused."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name}={prompt!r} must be a string or a non-empty list of strings.")
    blank = [i for i, p in enumerate(prompts) if not p.strip()]
    if blank:
        which = "The prompt is" if len(prompts) == 1 else f"Prompt {blank[0] + 1} of {len(prompts)} is"
        raise ValueError(f"{which} empty; describe the video to generate.")
    return list(prompts)


def check_positive_int(name: str, value: object) -> None:
    """None (use the default) or an integer >= 1."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name}={value!r} must be a positive integer (or None for the default).")


def check_guidance(guidance: object) -> float:
    """CFG scale in [0, MAX_GUIDANCE]; 1.0 (or less) turns CFG off."""
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance={guidance!r} must be a number in [0, {MAX_GUIDANCE:g}] (1.0 turns CFG off).")
    return float(guidance)


def check_shift(shift: object) -> None:
    if shift is not None and (isinstance(shift, bool) or not isinstance(shift, (int, float)) or not shift > 0
                              or not math.isfinite(shift)):
        raise ValueError(f"shift={shift!r} must be positive (Wan: 3.0 at 480p, 5.0 at 720p).")


def check_eta(eta: object) -> None:
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1):
        raise ValueError(f"eta={eta!r} must lie in [0, 1].")


def dtype_name(dtype: str) -> str:
    """torch's name of a weight dtype given in either spelling ("bf16" or "bfloat16" -> "bfloat16")."""
    key = dtype.lower() if isinstance(dtype, str) else dtype
    if key not in DTYPE_NAMES:
        raise ValueError(f"Unsupported dtype {dtype!r}; valid: {', '.join(DTYPE_NAMES)}.")
    return DTYPE_NAMES[key]


def check_weight_path(path: str | Path, what: str, *, folder: bool = True, file: bool = True) -> Path:
    """An existing .safetensors file (``file``) or diffusers folder (``folder``: model_index.json or config.json in
    it); FileNotFoundError / ValueError naming ``what`` (e.g. "--lora") and the path otherwise."""
    path = Path(path).expanduser()
    kinds = " or ".join(k for k, ok in (("a .safetensors file", file), ("a diffusers folder", folder)) if ok)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} not found; expected {kinds}.")
    if path.is_dir():
        if not folder:
            raise ValueError(f"{what} {str(path)!r} is a folder; expected {kinds}.")
        if not any((path / name).is_file() for name in ("model_index.json", "config.json")):
            raise ValueError(
                f"{what} {str(path)!r} is a folder without model_index.json or config.json, so not a diffusers "
                f"folder; expected {kinds}."
            )
        return path
    if not file:
        raise ValueError(f"{what} {str(path)!r} is a file; expected {kinds}.")
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise ValueError(
            f"{what} {str(path)!r} is not a .safetensors file (suffix {path.suffix or 'none'!r}); only safetensors "
            "weights are read (a .ckpt/.pt/.bin pickle can run code when loaded)."
        )
    return path


def check_lora_path(path: str | Path, what: str = "LoRA") -> Path:
    """An existing LoRA .safetensors file, or a folder holding exactly one (a training output folder), as
    :func:`blade_ops.lora.read_lora` takes it."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SAFETENSORS_SUFFIXES)
        if len(found) != 1:
            raise ValueError(
                f"{what} {str(path)!r} is a folder; it must hold exactly one .safetensors file (found: "
                f"{', '.join(found) or 'none'}), or give the file itself."
            )
        return path
    return check_weight_path(path, what, folder=False)


def check_output_path(path: str | Path, *, folder: bool, overwrite: bool) -> Path:
    """A path a video can be written to: an .mp4 file (``folder`` False) or a folder of PNG frames (True), in a
    writable place; an existing target needs ``overwrite`` and must be of the right kind."""
    path = Path(path).expanduser()
    if path.exists():
        if not folder and path.is_dir():
            raise ValueError(f"Output {str(path)!r} is a folder; give a file path ending in .mp4.")
        if folder and not path.is_dir():
            raise ValueError(f"Output {str(path)!r} is a file; PNG frames go into a folder (or give a .mp4 path).")
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it.")
    parent = path.parent
    while not parent.exists():  # the folders that do not exist yet are made when the video is written
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"Output {str(path)!r} cannot be written: {str(parent)!r} is a file, not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"Output {str(path)!r} cannot be written: no write permission in {str(parent)!r}.")
    return path
