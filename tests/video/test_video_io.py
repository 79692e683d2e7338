"""Contract of video_io: mp4 and PNG output read back with the right frame count and size, float and uint8
inputs, no overwrite without asking, atomic writes that leave no temporary files, and embedded metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from blade_ops.video_io import (
    read_mp4,
    read_mp4_comment,
    read_mp4_tags,
    to_uint8,
    write_mp4,
    write_png_frames,
    write_video,
)


def _frames(n=9, h=48, w=64, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, h, w, 3, generator=g)
    return x if dtype == torch.float32 else (x * 255).to(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_mp4_roundtrip(tmp_path, dtype):
    path = write_mp4(_frames(dtype=dtype), tmp_path / "a.mp4", fps=12, crf=20)
    frames, meta = read_mp4(path)
    assert frames.shape == (9, 48, 64, 3) and frames.dtype == np.uint8
    assert meta["fps"] == 12 and meta["codec"] == "h264"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # no temporary file left


def test_mp4_quality_follows_crf(tmp_path):
    smooth = torch.linspace(0, 1, 64).view(1, 1, 64, 1).expand(9, 48, 64, 3).contiguous()
    good, _ = read_mp4(write_mp4(smooth, tmp_path / "good.mp4", crf=0))
    assert np.abs(good.astype(int) - to_uint8(smooth).astype(int)).mean() < 2.0
    with pytest.raises(ValueError, match="crf=60 must be in 0..51"):
        write_mp4(smooth, tmp_path / "bad.mp4", crf=60)


def test_never_overwrites_unless_asked(tmp_path):
    path = write_mp4(_frames(), tmp_path / "a.mp4")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        write_mp4(_frames(n=5), path)
    assert path.read_bytes() == before
    write_mp4(_frames(n=5), path, overwrite=True)
    assert read_mp4(path)[0].shape[0] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"must be \[F, H, W, C\]"):
        write_mp4(torch.rand(4, 8, 8), tmp_path / "a.mp4")
    assert list(tmp_path.iterdir()) == []


def test_metadata_is_embedded(tmp_path):
    info = {"prompt": "a cat; =#\\ sitting", "seed": 3}
    path = write_mp4(_frames(), tmp_path / "a.mp4", metadata=info)
    assert json.loads(read_mp4_comment(path)) == info
    folder = write_png_frames(_frames(n=3), tmp_path / "pngs", metadata=info)
    assert json.loads(Image.open(folder / "frame_00000.png").text["comment"]) == info


def test_png_frames(tmp_path):
    frames = _frames(n=5, dtype=torch.uint8)
    folder = write_png_frames(frames, tmp_path / "out")
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == [f"frame_{i:05d}.png" for i in range(5)]
    assert np.array_equal(np.asarray(Image.open(files[2])), frames[2].numpy())  # lossless
    with pytest.raises(FileExistsError):
        write_png_frames(frames, folder)
    write_png_frames(frames[:2], folder, overwrite=True)
    assert len(list(folder.glob("*.png"))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_png_overwrite_never_deletes_other_files(tmp_path):
    """overwrite=True replaces an earlier set of frames, never a folder that holds anything else (a user's
    outputs folder given as the target by mistake)."""
    folder = tmp_path / "outputs"
    folder.mkdir()
    (folder / "earlier_video.mp4").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="not only frames"):
        write_png_frames(torch.rand(2, 16, 16, 3), folder, overwrite=True)
    assert (folder / "earlier_video.mp4").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]


def test_mp4_over_a_folder_is_refused_before_encoding(tmp_path):
    (tmp_path / "clip.mp4").mkdir()
    with pytest.raises(FileExistsError, match="is a folder"):
        write_mp4(torch.rand(2, 16, 16, 3), tmp_path / "clip.mp4", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_odd_sizes_and_grey_and_dispatch(tmp_path):
    frames, _ = read_mp4(write_video(torch.rand(3, 33, 47, 1), tmp_path / "odd.mp4", fps=8))
    assert frames.shape == (3, 34, 48, 3)  # padded to even for yuv420p
    assert write_video(torch.rand(2, 16, 16, 3), tmp_path / "dir", fps=8).is_dir()
    with pytest.raises(ValueError, match="must end in .mp4"):
        write_mp4(torch.rand(2, 16, 16, 3), tmp_path / "x.avi")


def _workflow(extra_nodes: int = 0) -> dict:
    """A UI-format workflow with the characters ffmpeg's metadata format escapes, unicode and newlines."""
    text = "a cat; =#\\ sitting\nnext line, 猫が座っている"
    nodes = [{"id": 1, "type": "BladeTextEncode", "widgets_values": [text, ""]}]
    nodes += [{"id": i + 2, "type": "Note", "widgets_values": ["x" * 100]} for i in range(extra_nodes)]
    return {"last_node_id": len(nodes), "nodes": nodes, "links": [], "version": 0.4}


@pytest.mark.parametrize("extra_nodes", [0, 2000])  # 2000 notes: ~250 KB, over Linux's 128 KiB per argument
def test_comfyui_prompt_and_workflow_tags(tmp_path, extra_nodes):
    """Like core's SaveVideo: each key its own tag holding JSON, as custom mp4 keys (movflags use_metadata_tags),
    which is where ComfyUI's frontend looks for the workflow of a dropped video."""
    workflow = _workflow(extra_nodes)
    prompt = {"3": {"class_type": "BladeSampler", "inputs": {"seed": 1, "model": ["1", 0]}}}
    path = write_mp4(_frames(n=3), tmp_path / "a.mp4", tags={"prompt": prompt, "workflow": workflow})
    tags = read_mp4_tags(path)
    assert json.loads(tags["workflow"]) == workflow and json.loads(tags["prompt"]) == prompt
    assert tags["workflow"] == json.dumps(workflow)  # the exact text SaveVideo stores
    data = path.read_bytes()
    assert b"mdtaworkflow" in data and b"mdtaprompt" in data  # the keys box of custom tags
    assert read_mp4(path)[0].shape[0] == 3 and read_mp4_comment(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # no temporary file left


def test_comment_and_tags_together_and_bad_tag_names(tmp_path):
    path = write_mp4(_frames(n=2), tmp_path / "a.mp4", metadata={"seed": 3}, tags={"workflow": {"nodes": []}})
    assert json.loads(read_mp4_comment(path)) == {"seed": 3}
    assert json.loads(read_mp4_tags(path)["workflow"]) == {"nodes": []}
    with pytest.raises(ValueError, match="tag name 'a=b'"):
        write_mp4(_frames(n=2), tmp_path / "b.mp4", tags={"a=b": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
