"""Safe reading of weight files: safetensors only, checked before anything is loaded.

Pickle-based checkpoints (.ckpt/.pt/.pth/.bin) can run arbitrary code when loaded, so they are refused by
extension and by content, never opened with ``torch.load``. A safetensors file starts with an 8-byte
little-endian header length and a JSON header giving each tensor's dtype, shape and byte range; reading that
header alone tells us the keys and shapes (for family and variant detection) and whether the file is complete
(a download cut short is shorter than the last byte range the header promises).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format caps the JSON header at 100 MB
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container
_PICKLE_MAGIC = b"\x80"  # pickle protocol >= 2 opcode PROTO


def _refuse_pickle(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} {why}. BLADE reads only .safetensors weights, because loading a pickle checkpoint can run "
        "arbitrary code. Convert it once in a trusted environment, e.g. "
        "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`, or download "
        "the .safetensors release of the same model."
    )


def check_weight_file(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is an existing safetensors file; raise a clear error otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        hint = ""
        if path.parent.is_dir():
            near = sorted(p.name for p in path.parent.iterdir() if p.suffix in SAFETENSORS_SUFFIXES)[:8]
            hint = f" Safetensors files in {path.parent}: {', '.join(near) if near else 'none'}."
        raise FileNotFoundError(f"Model file not found: {path}.{hint}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a .safetensors file here (folders go to the folder loader).")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise _refuse_pickle(path, f"is a pickle checkpoint ({suffix})")
    if suffix == ".gguf":
        raise ValueError(f"{path} is a GGUF (quantised) file; BLADE needs the .safetensors release of the model.")
    return path


def read_header(path: str | Path) -> dict[str, dict]:
    """Parse a safetensors header: {key: {"dtype", "shape", "data_offsets"}}, checking the file is complete.

    Raises ValueError naming the file when it is not safetensors, is a renamed pickle, or is truncated.
    """
    path = check_weight_file(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if head[:4] == _ZIP_MAGIC:
            raise _refuse_pickle(path, "is a pickle checkpoint with a .safetensors name")
        if len(head) < 8:
            raise ValueError(
                f"{path} is truncated or corrupt: {size} bytes, too short for a safetensors header. Re-download it."
            )
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER_BYTES and head[:1] == _PICKLE_MAGIC and head[1] in range(2, 6):
            raise _refuse_pickle(path, "is a pickle checkpoint with a .safetensors name")
        if n > _MAX_HEADER_BYTES:
            raise ValueError(
                f"{path} is not a safetensors file (its first 8 bytes give a header of {n} bytes). "
                "Expected a .safetensors weight file."
            )
        if 8 + n > size:
            raise ValueError(
                f"{path} is truncated or corrupt: its header needs {8 + n} bytes but the file has {size}. "
                "Re-download it."
            )
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is truncated or corrupt: its safetensors header is not valid JSON ({err}). Re-download it."
        ) from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file: its header is {type(header).__name__}, not a mapping.")
    header.pop("__metadata__", None)
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if 8 + n + end > size:
        raise ValueError(
            f"{path} is truncated or corrupt: the header promises {8 + n + end} bytes but the file has {size} "
            f"({100 * size / (8 + n + end):.0f}% of it). Re-download it."
        )
    return header


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of a safetensors file without loading any tensor."""
    return {k: tuple(v["shape"]) for k, v in read_header(path).items()}


def load_tensors(path: str | Path, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Load tensors (all, or ``keys``) from a checked safetensors file onto the CPU.

    Raises :class:`~blade_ops.finite.NonFiniteWeightsError` (a ValueError) naming the tensors when any holds NaN or
    Inf: a damaged file (one min/max pass over the tensors just read, see blade_ops/finite.py for the cost).
    """
    from safetensors import SafetensorError, safe_open

    from ..finite import check_finite

    path = check_weight_file(path)
    read_header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in (keys if keys is not None else f.keys())}
    except SafetensorError as err:
        raise ValueError(f"{path} is truncated or corrupt ({err}). Re-download it.") from None
    check_finite(tensors, f"Weight file {path}")
    return tensors
