"""Write frames to mp4 (H.264 through imageio-ffmpeg) or PNG files, atomically and never over an existing file
unless asked. Frames are [F, H, W, C] (C = 3, or 1 for grey), float in [0, 1] or uint8, tensor or array."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """[F, H, W, C] uint8 RGB from float [0, 1] (rounded, clipped) or uint8 input."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.float().numpy() if frames.is_floating_point() else frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be [F, H, W, C] with C in (1, 3), got shape {tuple(frames.shape)}.")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty (0 frames).")
    if frames.dtype == np.uint8:
        out = frames
    elif np.issubdtype(frames.dtype, np.floating):
        out = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"frames dtype {frames.dtype} is not supported; use float in [0, 1] or uint8.")
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def _umask_mode(base: int) -> int:
    """``base`` (0o666 files, 0o777 folders) less the process umask: temp files are created private."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def _check_target(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise FileExistsError(f"{path} is a folder; give a file path ending in .mp4.")
    if path.exists() and not overwrite:
        raise _exists_error(path)
    path.parent.mkdir(parents=True, exist_ok=True)


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a finished temporary file into place; without ``overwrite`` a file that appeared meanwhile wins."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic and fails if ``path`` exists
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise _exists_error(path) from None
    except OSError:  # file systems without hard links
        if path.exists():
            tmp.unlink(missing_ok=True)
            raise _exists_error(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _metadata_text(metadata: dict[str, Any] | str | None) -> str | None:
    if metadata is None or isinstance(metadata, str):
        return metadata
    return json.dumps(metadata, separators=(",", ":"), sort_keys=True)


_FFMETADATA_SPECIAL = "\\=;#\n"


def _ffmetadata_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _FFMETADATA_SPECIAL else ch for ch in text)


def _ffmetadata_file(entries: dict[str, str]) -> str:
    """ffmpeg's metadata file format: one escaped ``key=value`` per line after the ``;FFMETADATA1`` header. A file
    rather than ``-metadata key=value`` arguments, which Linux caps at 128 KiB each (large workflows exceed it)."""
    lines = [";FFMETADATA1"] + [f"{_ffmetadata_escape(k)}={_ffmetadata_escape(v)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


def _parse_ffmetadata(text: str) -> dict[str, str]:
    """Global ``key=value`` entries of an ffmetadata text (escapes undone, stops at the first [SECTION])."""
    entries: dict[str, str] = {}
    lines = iter(text.split("\n"))
    next(lines, None)  # ;FFMETADATA1
    for line in lines:
        if line.startswith("["):
            break
        if not line or line[0] in ";#":
            continue
        key, value, escaped = [], [], False
        target = key
        while True:
            for ch in line:
                if escaped:
                    target.append(ch)
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == "=" and target is key:
                    target = value
                else:
                    target.append(ch)
            if not escaped:  # a backslash at the end of a line escapes the newline
                break
            target.append("\n")
            escaped = False
            line = next(lines, "")
        if target is value:
            entries["".join(key)] = "".join(value)
    return entries


def _comfy_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    """ComfyUI's SaveVideo convention: every value is stored as ``json.dumps(value)`` under its own key."""
    out: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not key or any(ch in key for ch in "=\n"):
            raise ValueError(f"Metadata tag name {key!r} must be a non-empty string without '=' or newlines.")
        out[key] = json.dumps(value)
    return out


def _add_metadata(video: Path, out: Path, entries: dict[str, str]) -> None:
    """Copy the streams of ``video`` into ``out`` with ``entries`` as container tags, as custom mp4 keys
    (``-movflags use_metadata_tags``: what ComfyUI's SaveVideo writes, and where its frontend finds workflows)."""
    import subprocess

    import imageio_ffmpeg

    meta = out.with_name(out.name + ".ffmetadata")
    meta.write_text(_ffmetadata_file(entries), encoding="utf-8")
    try:
        result = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-f", "ffmetadata", "-i",
             str(meta), "-map", "0", "-map_metadata", "1", "-c", "copy", "-movflags", "use_metadata_tags", str(out)],
            capture_output=True, text=True, encoding="utf-8", errors="replace",
        )
    finally:
        meta.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write the metadata of {out.name}: {result.stderr.strip()[-2000:]}")


def write_mp4(
    frames: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    fps: float = 16,
    crf: int = 18,
    preset: str = "medium",
    overwrite: bool = False,
    metadata: dict[str, Any] | str | None = None,
    tags: dict[str, Any] | None = None,
) -> Path:
    """Encode frames as H.264 (yuv420p, plays everywhere). ``crf`` 0..51: lower is better quality (18 ~ visually
    lossless). ``metadata`` (dict -> JSON) goes into the container's ``comment`` tag. ``tags`` become one container
    tag each, the value stored as JSON, as ComfyUI's SaveVideo does: ``tags={"prompt": api_prompt, "workflow":
    ui_workflow}`` lets ComfyUI load the workflow back from the file. Returns the path written."""
    import imageio_ffmpeg

    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{path} must end in .mp4 (use write_png_frames for images).")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf={crf} must be in 0..51 (lower is better quality; 18 is visually lossless).")
    if not fps > 0:
        raise ValueError(f"fps={fps} must be positive.")
    video = to_uint8(frames)
    h, w = video.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sizes: repeat the last row/column
        logger.info("Padding %dx%d frames to even size for H.264.", w, h)
        video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = video.shape[1:3]
    _check_target(path, overwrite)
    entries = _comfy_tags(tags)
    text = _metadata_text(metadata)
    if text is not None:
        entries = {"comment": text, **entries}
    params = ["-crf", str(int(crf)), "-preset", preset]
    temps = []
    for _ in range(2 if entries else 1):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
        os.close(fd)
        temps.append(Path(tmp_name))
    try:
        writer = imageio_ffmpeg.write_frames(
            str(temps[0]), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", macro_block_size=1,
            output_params=params, ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in video:
            writer.send(frame)
        writer.close()
        if entries:
            _add_metadata(temps[0], temps[1], entries)
        os.chmod(temps[-1], _umask_mode(0o666))
        _publish(temps[-1], path, overwrite)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return path


def write_png_frames(
    frames: torch.Tensor | np.ndarray,
    folder: str | Path,
    *,
    overwrite: bool = False,
    metadata: dict[str, Any] | str | None = None,
    prefix: str = "frame_",
) -> Path:
    """Write ``folder/frame_00000.png`` ... (one per frame) into a new folder, built aside and renamed into place.
    ``metadata`` is stored as a PNG text chunk ("comment") in every frame. ``overwrite`` replaces a folder of earlier
    frames; a folder that holds other files is never replaced."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    folder = Path(folder)
    video = to_uint8(frames)
    if folder.exists() and not overwrite:
        raise _exists_error(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder.")
    if folder.exists():  # overwrite replaces earlier frames only, never a folder holding other files
        others = [p.name for p in folder.iterdir() if not (p.is_file() and p.name.startswith(prefix) and
                                                           p.suffix == ".png")]
        if others:
            raise FileExistsError(
                f"{folder} holds not only frames (e.g. {', '.join(sorted(others)[:3])}); overwrite replaces a "
                f"folder of {prefix}*.png frames only. Choose a new folder."
            )
    folder.parent.mkdir(parents=True, exist_ok=True)
    info = None
    text = _metadata_text(metadata)
    if text is not None:
        info = PngInfo()
        info.add_text("comment", text)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        digits = max(5, len(str(len(video))))
        for i, frame in enumerate(video):
            Image.fromarray(frame).save(tmp / f"{prefix}{i:0{digits}d}.png", pnginfo=info)
        os.chmod(tmp, _umask_mode(0o777))
        if folder.exists():  # overwrite: swap the old folder out, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def write_video(frames: torch.Tensor | np.ndarray, path: str | Path, **kwargs) -> Path:
    """mp4 when ``path`` ends in .mp4, else a folder of PNG frames (``fps``/``crf`` apply to mp4 only)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        return write_mp4(frames, path, **kwargs)
    for key in ("fps", "crf", "preset"):
        kwargs.pop(key, None)
    return write_png_frames(frames, path, **kwargs)


def read_mp4(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """All frames [F, H, W, 3] uint8 and ffmpeg's stream info (fps, size, ...); for tests and checks."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader]
    return np.stack(frames), meta


def read_mp4_tags(path: str | Path) -> dict[str, str]:
    """The container's global tags as ffmpeg reports them (``comment``, ComfyUI's ``prompt``/``workflow`` JSON,
    ``encoder``, ...); for tests and checks."""
    import subprocess

    import imageio_ffmpeg

    out = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", check=True,
    ).stdout
    return _parse_ffmetadata(out)


def read_mp4_comment(path: str | Path) -> str | None:
    """The container's ``comment`` tag (what ``write_mp4(metadata=...)`` stored), or None."""
    return read_mp4_tags(path).get("comment")
