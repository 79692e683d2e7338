"""Contract: empty prompts and the seed range behave the same in the nodes, the Python API (GenerationRequest) and
the command line, because all three call blade_ops.validation; a seed the sampler node offers also runs headless."""

from __future__ import annotations

import pytest
import torch
from blade_tiny_files import TINY_NAMES

from blade_ops.generate import main
from blade_ops.pipeline import GenerationRequest
from blade_ops.validation import SEED_MAX

EMPTY = "The prompt is empty; describe the video to generate."
SEED_RANGE = "must be an integer in [0, 2**64 - 1"


@pytest.fixture(scope="module")
def text_encoder(nodes, models_dir):
    (te,) = nodes["BladeTextEncoderLoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["wan"]), "wan", "fp32")
    return te


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_refused_by_all_three(nodes, text_encoder, tmp_path, capsys, prompt):
    with pytest.raises(ValueError, match=EMPTY):
        nodes["BladeTextEncode"]().encode(text_encoder, prompt, "")
    with pytest.raises(ValueError, match=EMPTY):
        GenerationRequest(prompt=prompt)
    assert main(["--demo", "--prompt", prompt, "--output", str(tmp_path / "v.mp4")]) == 2
    assert EMPTY in capsys.readouterr().err


def test_seed_range_is_the_same_for_all_three(nodes, wan, text_encoder, tmp_path, capsys):
    seed_input = nodes["BladeSampler"].INPUT_TYPES()["required"]["seed"][1]
    assert (seed_input["min"], seed_input["max"]) == (0, SEED_MAX) == (0, 2**64 - 1)
    (embeds,) = nodes["BladeTextEncode"]().encode(text_encoder, "a red ball", "")
    sample = nodes["BladeSampler"]().sample
    size = dict(steps=1, width=64, height=64, frames=5)
    top = sample(wan, embeds, seed=SEED_MAX, **size)[0]["blade"]["latents"]
    assert torch.isfinite(top).all()
    assert not torch.equal(top, sample(wan, embeds, seed=SEED_MAX - 1, **size)[0]["blade"]["latents"])
    with pytest.raises(ValueError, match=SEED_RANGE.replace("[", r"\[").replace("*", r"\*")):
        sample(wan, embeds, seed=SEED_MAX + 1, **size)
    # the API and the command line take the node's largest seed and refuse one past it with the same words
    assert GenerationRequest(prompt="a", seed=SEED_MAX).seed == SEED_MAX
    with pytest.raises(ValueError, match=SEED_RANGE.replace("[", r"\[").replace("*", r"\*")):
        GenerationRequest(prompt="a", seed=SEED_MAX + 1)
    out = tmp_path / "v.mp4"
    assert main(["--demo", "--seed", str(SEED_MAX + 1), "--output", str(out)]) == 2
    assert SEED_RANGE in capsys.readouterr().err
    assert main(["--demo", "--seed", str(SEED_MAX), "--steps", "1", "--output", str(out)]) == 0
