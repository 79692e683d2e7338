"""Contract: the toy domain renders prompt-faithful clips that the pixel VAE stand-in round-trips exactly through
blade_ops' decode path, and the whole toy experiment (teacher, metric, distillation, evaluation) runs end to end
at smoke-test size."""

from __future__ import annotations

import json

import pytest
import torch

from blade_ops.families import WAN
from blade_ops.models.bundle import ModelBundle
from blade_ops.pipeline.decode import decode
from training.toy.domain import DIRECTIONS, ToyGeometry, all_prompts, labels_of, random_batch
from training.toy.model import ToySpec
from training.toy.vae import PixelVAE


def test_prompts_and_labels():
    prompts = all_prompts()
    assert len(prompts) == 108 and prompts[0] == "a red circle moving left"
    colour, shape, direction = labels_of(torch.tensor([0, 107]))
    assert (colour.tolist(), shape.tolist(), direction.tolist()) == ([0, 8], [0, 2], [0, 3])


@pytest.mark.parametrize("geometry", [ToySpec().geometry, ToySpec.small().geometry, ToyGeometry()])
def test_shape_moves_in_the_named_direction_in_every_frame(geometry):
    """No bounce: the direction of the prompt is the motion between every pair of frames (the centroid of the drawn
    cells moves along it, up to rasterisation across it), so the direction label is never ambiguous."""
    index, cells = random_batch(2000, geometry, torch.Generator().manual_seed(0))
    mask = (cells.max(dim=1).values > -0.5).float()  # [N, T, S, S]
    coords = torch.arange(geometry.size, dtype=torch.float32)
    area = mask.sum(dim=(2, 3))
    cx = (mask.sum(2) * coords).sum(-1) / area
    cy = (mask.sum(3) * coords).sum(-1) / area
    direction = torch.tensor(list(DIRECTIONS.values()))[labels_of(index)[2]]  # [N, 2]
    along = (cx.diff(dim=1) * direction[:, :1] + cy.diff(dim=1) * direction[:, 1:])  # [N, T - 1]
    across = (cx.diff(dim=1) * direction[:, 1:]).abs() + (cy.diff(dim=1) * direction[:, :1]).abs()
    assert along.min() > 0.4 and across.max() < 0.5 and area.min() > 0


def test_random_batch_is_reproducible_and_lands_on_the_requested_device():
    a = random_batch(8, ToyGeometry(frames=3, size=8), torch.Generator().manual_seed(3))
    b = random_batch(8, ToyGeometry(frames=3, size=8), torch.Generator().manual_seed(3), device="cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[1].device.type == "cpu"


def test_pixel_vae_round_trip_through_pipeline_decode():
    geometry = ToyGeometry(frames=3, size=8, radius=(1.5, 2.5), speed=(1.0, 1.5))
    _, cells = random_batch(2, geometry, torch.Generator().manual_seed(0))
    vae = PixelVAE(latents_mean=[0.1] * 16, latents_std=[0.5] * 16)
    latents = vae.normalise(vae.encode_cells(cells))
    frames = decode(ModelBundle(family=WAN, vae=vae), latents)  # [B, F, H, W, C] in [0, 1]
    assert frames.shape == (2, 9, 64, 64, 3)
    video = frames.permute(0, 4, 1, 2, 3) * 2 - 1
    assert torch.allclose(vae.encode_pixels(video), vae.encode_cells(cells), atol=1e-5)


@pytest.mark.slow
def test_toy_experiment_smoke(tmp_path):
    from training.toy.run_all import main

    main(["--output", str(tmp_path), "--small", "--teacher-steps", "10", "--teacher-batch", "4",
          "--classifier-steps", "3", "--distill-steps", "2", "--distill-batch", "2", "--repeats", "1",
          "--cfg-scales", "3", "--device", "cpu"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert [s["label"].split(" ")[0] for s in results["scores"]] == ["teacher"] * 4 + ["BLADE"] * 2
    assert results["scores"][2]["density"] < 1.0 and (tmp_path / "toy_blade_lora.safetensors").is_file()
    # the student at step 0
    assert results["scores"][3]["setting"] == {"label": results["scores"][3]["label"], "sampler": "tdm", "steps": 8,
                                               "guidance": 1.0, "asa": True, "lora": None, "fp8_linears": False}


@pytest.mark.slow
def test_toy_dense_student_ablation_and_distill_benchmark(tmp_path):
    """--no-distill-asa distils and scores a dense student; --distill-benchmark only times steps."""
    from training.toy.run_all import main

    common = ["--small", "--teacher-steps", "10", "--teacher-batch", "4", "--classifier-steps", "3",
              "--distill-batch", "2", "--repeats", "1", "--cfg-scales", "3", "--device", "cpu"]
    main(["--output", str(tmp_path / "dense"), "--distill-steps", "2", "--no-distill-asa", *common])
    scores = json.loads((tmp_path / "dense" / "results.json").read_text())["scores"]
    students = [s for s in scores if s["setting"]["lora"]]
    assert len(students) == 2 and all(s["density"] is None and not s["setting"]["asa"] for s in students)
    main(["--output", str(tmp_path / "bench"), "--teacher", str(tmp_path / "dense" / "teacher"),
          "--distill-benchmark", "1,2", *common])
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["distill_benchmark"]
    assert [r["batch_size"] for r in rows] == [1, 2] and all(r["seconds_per_step"] > 0 for r in rows)
    assert "scores" not in json.loads((tmp_path / "bench" / "results.json").read_text())


@pytest.mark.slow
def test_toy_distillation_split_over_calls_matches_one_call(tmp_path):
    """A fixed-length distillation stopped at a checkpoint and continued by a second call (same --distill-dir)
    ends at the same step with the same student LoRA as one uninterrupted call; only the last call evaluates, and
    it scores every snapshot (the learning curve). A resume with another length is refused."""
    from safetensors.torch import load_file

    from training.toy.run_all import main

    common = ["--small", "--classifier-steps", "3", "--distill-batch", "2", "--repeats", "1", "--cfg-scales", "3",
              "--device", "cpu", "--fixed-steps", "--distill-steps", "4", "--lora-every", "2"]
    main(["--output", str(tmp_path / "one"), "--teacher-steps", "10", "--teacher-batch", "4", *common])
    teacher = ["--teacher", str(tmp_path / "one" / "teacher")]
    split = ["--distill-dir", str(tmp_path / "split"), *teacher, *common]
    main(["--output", str(tmp_path / "first"), "--distill-stop-at", "3", *split])
    first = json.loads((tmp_path / "first" / "results.json").read_text())
    assert first["distillation"]["steps"] == 3 and not first["distillation"]["finished"] and "scores" not in first
    main(["--output", str(tmp_path / "second"), *split])
    second = json.loads((tmp_path / "second" / "results.json").read_text())
    assert (second["distillation"]["first_step"], second["distillation"]["steps"]) == (3, 4)
    assert [c["step"] for c in second["curve"]] == [2, 3, 4] and len(second["scores"]) == 6

    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert [c["step"] for c in one["curve"]] == [2, 4]
    for name in ("student-00002.safetensors", "student-00004.safetensors"):
        a = load_file(tmp_path / "one" / "distill" / "loras" / name)
        b = load_file(tmp_path / "split" / "loras" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    with pytest.raises(SystemExit, match="distill-steps 5"):
        main(["--output", str(tmp_path / "third"), *split[:-4], "--distill-steps", "5", "--lora-every", "2"])
    # a run cut short is scored from its snapshots without distilling, beside another run's curve
    main(["--output", str(tmp_path / "snapshots"), "--evaluate-snapshots", "--distill-dir",
          str(tmp_path / "one" / "distill"), "--compare-snapshots", str(tmp_path / "split" / "loras"), *teacher,
          "--small", "--classifier-steps", "3", "--repeats", "1", "--cfg-scales", "3", "--device", "cpu"])
    scored = json.loads((tmp_path / "snapshots" / "results.json").read_text())
    assert scored["distillation"]["evaluated_snapshots_only"] and scored["distillation"]["steps"] == 4
    assert [c["step"] for c in scored["curve"]] == [2, 4] and [c["step"] for c in scored["compare_curve"]] == [2, 3, 4]
    assert scored["scores"][4]["label"].startswith("BLADE student 8-step + ASA at step 4")
