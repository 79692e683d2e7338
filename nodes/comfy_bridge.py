"""The only place the pack touches ComfyUI's own modules, always lazily and with a fallback.

Inside ComfyUI, model files come from ``folder_paths`` (models/diffusion_models, models/vae, models/loras,
models/text_encoders, models/diffusers), progress goes to ``comfy.utils.ProgressBar`` and Cancel is honoured
through ``comfy.model_management``. Without ComfyUI (tests, scripts) the same calls work on plain folders:
absolute paths, or names under ``$BLADE_MODELS_DIR/<folder>/`` laid out like ComfyUI's models folder, and
outputs under ``$BLADE_OUTPUT_DIR`` (default ``./output``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".safetensors", ".sft")
DIFFUSERS_MARKERS = ("model_index.json", "config.json")
FALLBACK_MODELS_ENV = "BLADE_MODELS_DIR"
FALLBACK_OUTPUT_ENV = "BLADE_OUTPUT_DIR"


def _optional(name: str) -> ModuleType | None:
    """Import a ComfyUI module if we run inside ComfyUI, else None."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def folder_paths_module() -> ModuleType | None:
    return _optional("folder_paths")


def in_comfyui() -> bool:
    """True when ComfyUI's ``folder_paths`` is importable (we are running inside ComfyUI)."""
    return folder_paths_module() is not None


# ----------------------------------------------------------------------------------------------------------------
# Model folders


def model_dirs(folder: str) -> list[Path]:
    """Directories ComfyUI searches for ``folder`` (e.g. "loras"), or ``$BLADE_MODELS_DIR/<folder>`` outside it."""
    fp = folder_paths_module()
    if fp is not None:
        try:
            return [Path(p) for p in fp.get_folder_paths(folder)]
        except KeyError:
            return []
    root = os.environ.get(FALLBACK_MODELS_ENV)
    return [Path(root) / folder] if root else []


def _is_diffusers_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in DIFFUSERS_MARKERS)


def list_files(folder: str) -> list[str]:
    """Weight files (safetensors) under a model folder, as names relative to it, sorted."""
    fp = folder_paths_module()
    if fp is not None:
        try:
            names = fp.get_filename_list(folder)
        except KeyError:
            names = []
        return sorted(n for n in names if n.lower().endswith(MODEL_EXTENSIONS))
    names = set()
    for base in model_dirs(folder):
        if base.is_dir():
            found = (p for p in base.rglob("*") if p.suffix.lower() in MODEL_EXTENSIONS)
            names.update(p.relative_to(base).as_posix() for p in found)
    return sorted(names)


def list_diffusers_folders(folder: str = "diffusers") -> list[str]:
    """Diffusers-format folders (a model_index.json or config.json inside) under a model folder, sorted."""
    names = set()
    for base in model_dirs(folder):
        if not base.is_dir():
            continue
        for root, dirs, files in os.walk(base, followlinks=True):
            if any(m in files for m in DIFFUSERS_MARKERS):
                names.add(Path(root).relative_to(base).as_posix())
                dirs.clear()  # a pipeline folder's subfolders are its parts, not separate models
    return sorted(names)


def model_choices(*folders: str, diffusers: bool = False, files: bool = True) -> list[str]:
    """Combo values for a loader: weight files in ``folders`` (if ``files``), model folders (with a config) in
    ``folders``, then diffusers folders in models/diffusers (if ``diffusers``)."""
    names: list[str] = []
    for folder in folders:
        if files:
            names.extend(list_files(folder))
        names.extend(n for n in list_diffusers_folders(folder) if n not in names)
    if diffusers:
        names.extend(n for n in list_diffusers_folders() if n not in names)
    return names


def resolve_model_path(name: str, *folders: str, diffusers: bool = False) -> Path:
    """Turn a combo value (or an absolute path) into an existing file or folder, or say where to put it."""
    if not name:
        raise ValueError(f"No model selected; put one in ComfyUI's models/{folders[0]}/ folder and pick it.")
    path = Path(name).expanduser()
    if path.is_absolute():
        if path.exists():
            return path
        raise FileNotFoundError(f"{path} does not exist; check the path or pick a file from models/{folders[0]}/.")
    fp = folder_paths_module()
    searched: list[Path] = []
    for folder in folders + (("diffusers",) if diffusers else ()):
        if fp is not None and folder != "diffusers" and Path(name).suffix.lower() in MODEL_EXTENSIONS:
            full = fp.get_full_path(folder, name)
            if full:
                return Path(full)
        for base in model_dirs(folder):
            searched.append(base)
            candidate = base / name
            if candidate.is_file() or _is_diffusers_dir(candidate):
                return candidate
    where = ", ".join(str(s) for s in searched) or "(no model folders configured)"
    hint = "" if fp is not None else f" Outside ComfyUI, set {FALLBACK_MODELS_ENV} or pass an absolute path."
    raise FileNotFoundError(
        f"Model {name!r} not found in models/{'|'.join(folders)}" + ("|diffusers" if diffusers else "")
        + f" (searched: {where}). Put the file there and press R in ComfyUI to refresh the lists.{hint}"
    )


# ----------------------------------------------------------------------------------------------------------------
# Devices and memory


def torch_device() -> torch.device:
    """ComfyUI's compute device, else CUDA when present, else CPU."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_comfy_memory() -> None:
    """Unload ComfyUI's own models and empty its cache before our models go to the GPU."""
    mm = _optional("comfy.model_management")
    if mm is None:
        return
    mm.unload_all_models()
    mm.soft_empty_cache()


def empty_cache() -> None:
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "out of memory" on this torch build."""
    types: list[type[BaseException]] = [torch.OutOfMemoryError] if hasattr(torch, "OutOfMemoryError") else []
    return tuple(types) or (torch.cuda.OutOfMemoryError,)


@contextlib.contextmanager
def oom_advice(what: str, advice: str) -> Iterator[None]:
    """Re-raise an out-of-memory error as a RuntimeError that says what to change."""
    try:
        yield
    except oom_error_types() as err:
        empty_cache()
        raise RuntimeError(f"Out of GPU memory while {what}. {advice} (original error: {err})") from err


# ----------------------------------------------------------------------------------------------------------------
# Progress and cancel


def check_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel; no-op outside ComfyUI."""
    mm = _optional("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()


class Progress:
    """A per-step progress reporter: ComfyUI's ProgressBar inside ComfyUI, a log line per step outside."""

    def __init__(self, total: int, label: str = "BLADE"):
        self.total = int(total)
        self.label = label
        self.current = 0
        utils = _optional("comfy.utils")
        self._bar = utils.ProgressBar(self.total) if utils is not None else None

    def update_absolute(self, value: int) -> None:
        self.current = min(int(value), self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.current, self.total)
        else:
            log.info("%s: step %d/%d", self.label, self.current, self.total)


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def output_directory() -> Path:
    """ComfyUI's output folder, else ``$BLADE_OUTPUT_DIR`` or ./output."""
    fp = folder_paths_module()
    if fp is not None:
        return Path(fp.get_output_directory())
    return Path(os.environ.get(FALLBACK_OUTPUT_ENV, "output")).resolve()


def save_path(prefix: str, width: int, height: int, extension: str) -> tuple[Path, str, str]:
    """A new, unused file path for ``prefix`` in the output folder: (path, filename, subfolder).

    Inside ComfyUI this follows ``folder_paths.get_save_image_path`` (counter, %date% and size tokens, subfolders
    in the prefix), so files sit next to the ones core's save nodes write.
    """
    fp = folder_paths_module()
    out_dir = output_directory()
    if fp is not None:
        folder, filename, counter, subfolder, _ = fp.get_save_image_path(prefix, str(out_dir), width, height)
    else:
        prefix_path = Path(prefix)
        subfolder = prefix_path.parent.as_posix() if prefix_path.parent != Path(".") else ""
        folder = out_dir / subfolder
        filename = prefix_path.name or "BLADE"
        Path(folder).mkdir(parents=True, exist_ok=True)
        counter = 1
    while True:
        name = f"{filename}_{counter:05}_.{extension}"
        path = Path(folder) / name
        if not path.exists():
            return path, name, subfolder
        counter += 1


def metadata_disabled() -> bool:
    """True when ComfyUI was started with --disable-metadata."""
    cli = _optional("comfy.cli_args")
    return bool(cli is not None and getattr(cli.args, "disable_metadata", False))
