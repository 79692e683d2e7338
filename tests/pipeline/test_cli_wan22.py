"""Contract of ``python -m blade_ops.generate`` on Wan2.2: a TI2V-5B folder and A14B's ComfyUI-style single files
(two experts, one LoRA each) run the BLADE preset (ASA on every expert) and write mp4s of the requested size at the
family's frame rate; ``--family`` offers the Wan2.2 families."""

from __future__ import annotations

import json

import pytest

from blade_ops.families import WAN22_A14B, WAN22_TI2V
from blade_ops.generate import build_parser, main
from blade_ops.video_io import read_mp4, read_mp4_comment
from tests.common import attention_lora
from tests.models.model_helpers import a14b_expert_files


def test_family_choices_come_from_the_registry():
    family = next(a for a in build_parser()._actions if a.dest == "family")
    assert {WAN22_TI2V.name, WAN22_A14B.name} <= set(family.choices)


def test_ti2v_folder_blade_preset(tiny_folder, tmp_path):
    out = tmp_path / "ti2v.mp4"
    args = ["--model", str(tiny_folder(WAN22_TI2V.name)), "--preset", "blade", "--steps", "2", "--width", "128",
            "--height", "128", "--frames", "5", "--prompt", "a red ball", "--output", str(out)]
    assert main(args) == 0
    frames, meta = read_mp4(out)
    assert frames.shape == (5, 128, 128, 3) and meta["fps"] == WAN22_TI2V.fps
    assert json.loads(read_mp4_comment(out))["family"] == WAN22_TI2V.name


def test_a14b_expert_files_with_a_lora_each(tiny_folder, tmp_path, capsys):
    """Two expert files as ComfyUI ships them (high-noise fp8_scaled, low-noise fp32); 128-wide heads, so every
    setting is inferred from the shapes as for the released files."""
    folder = tiny_folder(WAN22_A14B.name)
    experts, high, low = a14b_expert_files(tmp_path, high="high_noise_fp8_scaled.safetensors")
    loras = [attention_lora(expert, tmp_path / name) for name, expert in zip("hl", experts, strict=True)]
    out = tmp_path / "a14b.mp4"
    common = ["--transformer", str(high), "--vae", str(folder / "vae"), "--text-encoder", str(folder),
              "--width", "64", "--height", "64", "--frames", "5", "--prompt", "a cat", "--output", str(out)]
    assert main([*common, "--transformer-2", str(low), "--lora", loras[0], "--lora-2", loras[1],
                 "--preset", "blade", "--steps", "3"]) == 0
    frames, meta = read_mp4(out)
    assert frames.shape == (5, 64, 64, 3) and meta["fps"] == WAN22_A14B.fps
    info = json.loads(read_mp4_comment(out))
    assert info["family"] == WAN22_A14B.name and info["lora_2"] == loras[1]
    assert main([*common, "--overwrite", "--family", WAN22_A14B.name]) == 2  # one expert's file is not enough
    assert "transformer_2" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "message"), [
    ("--lora-2", "--lora-2 '.*missing.safetensors' not found"),
    ("--transformer-2", "--transformer-2 is the second expert's file: give the first with --transformer"),
])
def test_second_expert_flags_are_checked_before_loading(tmp_path, capsys, flag, message):
    import re

    args = ["--demo", flag, str(tmp_path / "missing.safetensors"), "--output", str(tmp_path / "x.mp4")]
    assert main(args) == 2
    assert re.search(message, capsys.readouterr().err)
