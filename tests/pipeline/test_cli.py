"""Contract of ``python -m blade_ops.generate``: the demo and a saved model folder each write a playable mp4 with
the requested size and frame count, and an existing output is only replaced with --overwrite."""

from __future__ import annotations

import json
import logging

import pytest

from blade_ops.generate import main
from blade_ops.video_io import read_mp4, read_mp4_comment


def test_demo_writes_mp4(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert main(["--demo", "--output", str(out), "--steps", "2"]) == 0
    frames, meta = read_mp4(out)
    assert frames.shape == (5, 64, 64, 3) and meta["fps"] == 16
    assert json.loads(read_mp4_comment(out))["sampler"] == "blade"
    assert main(["--demo", "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["--demo", "--output", str(out), "--overwrite", "--steps", "1", "--seed", "3"]) == 0


def test_model_folder_end_to_end(family, tiny_folder, tmp_path):
    out = tmp_path / "clip.mp4"
    size = ["--width", "48", "--height", "32", "--frames", "5" if family == "wan" else "9"]
    args = ["--model", str(tiny_folder(family)), "--preset", "none", "--steps", "2", "--fps", "10",
            "--prompt", "a blue car", "--prompt", "a dog", "--output", str(out), *size]
    assert main(args) == 0
    for i in range(2):
        frames, meta = read_mp4(tmp_path / f"clip_{i}.mp4")
        assert frames.shape == (int(size[-1]), 32, 48, 3) and meta["fps"] == 10


def test_png_output_and_errors(tmp_path, capsys):
    out = tmp_path / "frames"
    assert main(["--demo", "--output", str(out), "--steps", "1"]) == 0
    assert len(list(out.glob("frame_*.png"))) == 5
    assert main(["--demo", "--output", str(tmp_path / "x.mp4"), "--width", "50"]) == 2
    assert "width=50 must be a positive multiple of 16" in capsys.readouterr().err
    assert main(["--output", str(tmp_path / "y.mp4"), "--prompt", "a"]) == 2
    assert "No model given" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--demo", "--sampler", "euler"])
    assert main(["--demo", "--family", "cogvideox", "--output", str(tmp_path / "z.mp4")]) == 2
    assert "--demo builds a tiny Wan model" in capsys.readouterr().err


def test_missing_files_are_errors_not_tracebacks(tmp_path, capsys):
    args = ["--prompt", "a", "--output", str(tmp_path / "x.mp4")]
    assert main(["--model", str(tmp_path / "no_model"), *args]) == 2
    assert "Model path not found" in capsys.readouterr().err
    assert main(["--demo", "--lora", str(tmp_path / "no_lora.safetensors"), "--steps", "1", *args]) == 2
    assert "LoRA file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_bad_crf_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import blade_ops.generate as cli

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the output options were checked")

    monkeypatch.setattr(cli, "load_bundle", no_loading)
    assert main(["--demo", "--output", str(tmp_path / "x.mp4"), "--crf", "99"]) == 2
    assert "crf=99 must be in 0..51" in capsys.readouterr().err
    assert main(["--demo", "--output", str(tmp_path / "x.mp4"), "--fps", "0"]) == 2
    assert "fps=0 must be a positive number" in capsys.readouterr().err
    assert main(["--demo", "--output", str(tmp_path / "x.mp4"), "--vae-chunk", "0"]) == 2
    assert "--vae-chunk 0: give at least 1 latent frame" in capsys.readouterr().err


def test_compile_vae_flag_compiles_the_wan_decoder_before_generating(tmp_path, monkeypatch):
    import blade_ops.pipeline.compile as compile_module

    compiled = []
    monkeypatch.setattr(compile_module, "compile_vae_decoder", lambda vae, **kw: compiled.append(vae) or True)
    assert main(["--demo", "--compile-vae", "--steps", "1", "--output", str(tmp_path / "v.mp4")]) == 0
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "AutoencoderKLWan"
    assert (tmp_path / "v.mp4").exists()


def test_blade_lora_with_the_baseline_preset_warns(tmp_path, caplog):
    from blade_tiny_files import write_tiny_lora

    lora = str(write_tiny_lora("wan", tmp_path / "blade.safetensors"))
    args = ["--demo", "--lora", lora, "--output", str(tmp_path / "v.mp4"), "--overwrite"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--preset", "baseline", "--steps", "2"]) == 0
    warned = [r.getMessage() for r in caplog.records if "BLADE LoRA" in r.getMessage()]
    assert len(warned) == 1
    assert "distilled for 8 steps without CFG; this run samples 2 steps with CFG 5" in warned[0]
    assert "--preset blade" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--preset", "blade"]) == 0
    assert not [r for r in caplog.records if "BLADE LoRA" in r.getMessage()]
