"""Contract: a few TDM steps on a tiny model give finite losses and change only the LoRA weights; the frozen dense
teacher (the base with adapters off) is untouched. Both families."""

from __future__ import annotations

import math

import pytest
import torch
from training_helpers import make_distiller

from training.distill import train
from training.models import FAKE, STUDENT, TEACHER


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
def test_few_steps_change_only_lora(family, embeddings_folder, tmp_path):
    d = make_distiller(family, embeddings_folder(family), tmp_path)
    base_before = {n: p.detach().clone() for n, p in d.models.transformer.named_parameters() if "lora_" not in n}
    lora_before = {a: d.lora_tensors(a) for a in (STUDENT, FAKE)}
    x = torch.randn(d.latent_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700, 300])
    text = d.embeddings.get([0, 1])
    with torch.no_grad():
        teacher_before = d.models(TEACHER, x, t, text)

    logs = train(d, 3)

    assert len(logs) == 3
    assert all(0.0 < log.density <= 1.0 for log in logs)  # the student and fake score ran sparse
    assert all(math.isfinite(v) for log in logs for v in (log.loss_fake, log.loss_student))
    for name, value in d.models.transformer.named_parameters():
        if "lora_" not in name:
            assert torch.equal(value, base_before[name]), f"base weight {name} changed"
    for adapter in (STUDENT, FAKE):
        after = d.lora_tensors(adapter)
        changed = [n for n in after if not torch.equal(after[n], lora_before[adapter][n])]
        assert changed, f"the {adapter} LoRA did not move"
    with torch.no_grad():
        assert torch.equal(d.models(TEACHER, x, t, text), teacher_before)
        assert not torch.allclose(d.models(STUDENT, x, t, text), teacher_before)


def test_bf16_gradient_checkpointing_and_validation_videos(embeddings_folder, tmp_path):
    """bf16 autocast (CPU) with gradient checkpointing trains; a checkpoint step writes validation mp4s."""
    from accelerate import Accelerator
    from training_helpers import make_config, tiny_bundle

    from blade_ops.video_io import read_mp4
    from training.distill import Distiller
    from training.prompts import PromptEmbeddings

    emb = embeddings_folder("wan")
    config = make_config("wan", emb, tmp_path, mixed_precision="bf16", gradient_checkpointing=True,
                         checkpointing_steps=2, validation_steps=-1, num_validation_prompts=1, max_train_steps=2)
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    d = Distiller(config, tiny_bundle("wan"), PromptEmbeddings.open(emb), accelerator)
    assert d.models.transformer.gradient_checkpointing
    logs = train(d)
    assert all(math.isfinite(log.loss_fake) and math.isfinite(log.loss_student) for log in logs)
    frames, _ = read_mp4(tmp_path / "validation" / "step-2" / "00.mp4")
    assert frames.shape[0] == 5


def test_gradient_checkpointing_gives_the_same_updates(embeddings_folder, tmp_path):
    """Checkpointed blocks are recomputed in backward: the student's role (adapter + ASA) must still be active then,
    although the teacher and fake score ran in between."""
    emb = embeddings_folder("wan")
    plain = make_distiller("wan", emb, tmp_path / "plain", max_train_steps=2)
    train(plain)
    ckpt = make_distiller("wan", emb, tmp_path / "ckpt", max_train_steps=2, gradient_checkpointing=True)
    train(ckpt)
    for adapter in (STUDENT, FAKE):
        a, b = plain.lora_tensors(adapter), ckpt.lora_tensors(adapter)
        assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-5, adapter
