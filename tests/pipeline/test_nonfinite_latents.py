"""Contract: when the latents turn NaN or Inf during sampling, the run stops at that step with an error naming the
step and the likely causes (LoRA strength, fp16 overflow, damaged weights); no black video is ever written."""

from __future__ import annotations

import pytest
import torch
from blade_tiny_files import write_tiny_lora

from blade_ops.generate import main
from blade_ops.lora import apply_lora
from blade_ops.models import load_model_bundle
from blade_ops.models.tiny import tiny_video_size
from blade_ops.pipeline import GenerationRequest, NonFiniteLatentsError, generate


def _request(**kw) -> GenerationRequest:
    return GenerationRequest(prompt="a red ball", steps=3, seed=1, **tiny_video_size("wan"), **kw)


def test_lora_at_an_absurd_strength_stops_at_the_first_step(tiny_folder, tmp_path):
    bundle = load_model_bundle(tiny_folder("wan"), dtype=torch.float32)
    lora = write_tiny_lora("wan", tmp_path / "blade.safetensors")
    apply_lora(bundle.transformer, lora, strength=1e30)
    steps = []
    with pytest.raises(NonFiniteLatentsError) as err:
        generate(bundle, _request(), device="cpu", callback=lambda info: steps.append(info.step))
    msg = str(err.value)
    assert msg.startswith("Sampling produced non-finite latents at step 1 of 3 (timestep ")
    assert "so the video would be black" in msg and "NaN" in msg
    assert "a LoRA strength far from 1 (applied: 'blade' at 1e+30)" in msg
    assert "fp16 overflow (not the case here: the model runs in float32)" in msg and "damaged weights" in msg
    assert (err.value.step, err.value.total) == (1, 3) and steps == []  # stopped before the step was reported


def test_damaged_weights_in_memory_stop_the_run(tiny_folder):
    bundle = load_model_bundle(tiny_folder("wan"), dtype=torch.float32)
    with torch.no_grad():
        bundle.transformer.blocks[0].ffn.net[2].weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLatentsError, match=r"at step 1 of 3 .*none is applied here.*damaged weights"):
        generate(bundle, _request(), device="cpu")


def test_command_line_exits_with_the_error_and_writes_nothing(tmp_path, capsys):
    lora = write_tiny_lora("wan", tmp_path / "blade.safetensors")
    out = tmp_path / "black.mp4"
    assert main(["--demo", "--lora", str(lora), "--lora-strength", "1e30", "--steps", "2", "--output", str(out)]) == 2
    assert "Sampling produced non-finite latents at step 1 of 2" in capsys.readouterr().err
    assert not out.exists()
