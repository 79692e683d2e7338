"""Contract of ``python -m blade_ops.generate``: the demo and a saved model folder each write a playable mp4 with
the requested size and frame count, and an existing output is only replaced with --overwrite."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

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
    assert f"--model '{tmp_path / 'no_model'}' not found" in capsys.readouterr().err
    assert main(["--demo", "--lora", str(tmp_path / "no_lora.safetensors"), "--steps", "1", *args]) == 2
    assert f"--lora '{tmp_path / 'no_lora.safetensors'}' not found" in capsys.readouterr().err
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


def test_fp8_linear_without_fp8_tensor_cores_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import blade_ops.generate as cli

    monkeypatch.setattr(cli, "load_bundle", lambda *a, **k: pytest.fail("loaded a model before refusing --fp8-linear"))
    assert main(["--demo", "--fp8-linear", "--device", "cpu", "--output", str(tmp_path / "x.mp4")]) == 2
    assert "fp8 linear layers need a CUDA GPU with fp8 tensor cores (compute capability 8.9" in capsys.readouterr().err


def test_compile_vae_flag_compiles_the_wan_decoder_before_generating(tmp_path, monkeypatch):
    import blade_ops.pipeline.compile as compile_module

    compiled = []
    monkeypatch.setattr(compile_module, "compile_vae_decoder", lambda vae, **kw: compiled.append(vae) or True)
    assert main(["--demo", "--compile-vae", "--steps", "1", "--output", str(tmp_path / "v.mp4")]) == 0
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "AutoencoderKLWan"
    assert (tmp_path / "v.mp4").exists()


# ------------------------------------------------------------------ checks before torch and before any weights load

ROOT = Path(__file__).resolve().parents[2]
_RUN_ALL = """
import contextlib, io, json, sys, time
from blade_ops.generate import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as stop:
            rc = stop.code
    out.append([rc, err.getvalue()])
print(json.dumps({"results": out, "torch": "torch" in sys.modules}))
"""


def _bad_arguments(tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "folder.mp4").mkdir()
    (tmp / "not_a_model").mkdir()
    (tmp / "a_file").write_text("x")
    (tmp / "exists.mp4").write_bytes(b"x")
    (tmp / "lora.ckpt").write_bytes(b"x")
    (tmp / "cog").mkdir()
    (tmp / "cog" / "model_index.json").write_text('{"_class_name": "CogVideoXPipeline"}')
    out = ["--output", str(tmp / "v.mp4")]
    return [
        (["--demo", "--steps", "0", *out], "steps=0 must be a positive integer"),
        (["--demo", "--seed", "-1", *out], "seed=-1 must be an integer in [0, 2**64 - 1"),
        (["--demo", "--seed", str(2**64), *out], f"seed={2**64} must be an integer in [0, 2**64 - 1"),
        (["--demo", "--prompt", " ", *out], "The prompt is empty"),
        (["--demo", "--prompt", "a", "--prompt", "", *out], "Prompt 2 of 2 is empty"),
        (["--demo", "--guidance", "99", *out], "guidance=99.0 must be a number in [0, 50]"),
        (["--demo", "--width", "50", *out], "width=50 must be a positive multiple of 16"),
        (["--demo", "--eta", "2", *out], "eta=2.0 must lie in [0, 1]"),
        (["--demo", "--lora-strength", "nan", *out], "--lora-strength nan must be a finite number"),
        (["--model", str(tmp / "cog"), "--family", "cogvideox", "--frames", "13", "--prompt", "a", *out],
         "frames=13 must be 8k+1"),
        (["--model", str(tmp / "a_file"), "--prompt", "a", *out], "is not a .safetensors file"),
        (["--model", str(tmp / "not_a_model"), "--prompt", "a", *out], "without model_index.json or config.json"),
        (["--demo", "--lora", str(tmp / "lora.ckpt"), *out], "is not a .safetensors file"),
        (["--demo", "--lora", str(tmp / "cog"), *out], "is a folder; it must hold exactly one .safetensors file"),
        (["--demo", "--output", str(tmp / "folder.mp4")], "is a folder; give a file path ending in .mp4"),
        (["--demo", "--output", str(tmp / "a_file" / "v.mp4")], "is a file, not a folder"),
        (["--demo", "--output", str(tmp / "exists.mp4")], "already exists; pass --overwrite"),
        (["--demo", "--output", str(tmp / "a_file")], "PNG frames go into a folder"),
        (["--demo", "--sampler", "euler", *out], "invalid choice: 'euler'"),
        (["--demo", "--dtype", "int8", *out], "invalid choice: 'int8'"),
        (["--prompt", "a", *out], "No model given"),
    ]


def test_help_and_argument_errors_answer_without_importing_torch(tmp_path):
    """Every request field is checked on the arguments alone; torch (seconds to import) is never loaded for it."""
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    shown = subprocess.run([sys.executable, "-X", "importtime", "-m", "blade_ops.generate", "--help"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert shown.returncode == 0 and "--dtype {fp32,float32,bf16,bfloat16,fp16,float16}" in shown.stdout
    lines = [line for line in shown.stderr.splitlines() if line.startswith("import time")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines}
    assert "blade_ops.validation" in imported and not {m for m in imported if m.split(".")[0] == "torch"}
    assert elapsed < 5, f"--help took {elapsed:.1f} s"

    cases = _bad_arguments(tmp_path)
    ran = subprocess.run([sys.executable, "-c", _RUN_ALL, json.dumps([argv for argv, _ in cases])], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    for (argv, message), (rc, err) in zip(cases, report["results"], strict=True):
        assert rc == 2 and message in err, (argv, rc, err)
    assert not report["torch"]
    assert not (tmp_path / "v.mp4").exists()


def test_size_is_checked_against_the_detected_family_before_weights_load(tiny_folder, tmp_path, capsys, monkeypatch):
    import blade_ops.generate as cli

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the size was checked")

    monkeypatch.setattr(cli, "load_bundle", no_loading)
    args = ["--model", str(tiny_folder("cogvideox")), "--prompt", "a", "--output", str(tmp_path / "x.mp4")]
    assert main([*args, "--frames", "13"]) == 2
    assert "Invalid video size for cogvideox: frames=13 must be 8k+1" in capsys.readouterr().err


def test_registries_match_the_command_line_choices():
    from blade_ops.pipeline import PRESETS
    from blade_ops.sampling import available_samplers
    from blade_ops.validation import PRESET_NAMES, SAMPLER_NAMES

    assert sorted(SAMPLER_NAMES) == sorted(available_samplers())
    assert list(PRESET_NAMES) == list(PRESETS)


def test_dtype_in_both_spellings_gives_the_same_video(tmp_path):
    for name in ("fp32", "float32"):
        assert main(["--demo", "--dtype", name, "--steps", "1", "--output", str(tmp_path / name)]) == 0
    for a, b in zip(sorted((tmp_path / "fp32").iterdir()), sorted((tmp_path / "float32").iterdir()), strict=True):
        assert a.read_bytes() == b.read_bytes()


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
