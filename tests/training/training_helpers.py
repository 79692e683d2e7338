"""Tiny models, prompt list and Distiller builders shared by the training tests."""

from __future__ import annotations

import torch

PROMPTS = ["a red circle moving left", "a blue square bouncing up", "a green ball rolling right", "a white star"]


def tiny_bundle(family: str):
    from blade_ops.families import get_family
    from blade_ops.models.bundle import ModelBundle
    from blade_ops.models.tiny import tiny_components

    parts = tiny_components(family)
    fam = get_family(family)
    experts = {name: parts[name] for name in fam.expert_names}  # two for Wan2.2 A14B
    return ModelBundle(
        family=fam, **experts, vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
        variant=f"tiny-{family}",
    )


def make_config(family: str, embeddings, output_dir, **overrides):
    from blade_ops.models.tiny import tiny_video_size
    from training.config import build_config

    values = dict(
        model=f"tiny-{family}", family=family, prompt_embeddings=str(embeddings), output_dir=str(output_dir),
        lora_rank=4, lora_alpha=4, train_batch_size=2, gradient_accumulation_steps=1, max_train_steps=3,
        checkpointing_steps=100, validation_steps=0, mixed_precision="no", gradient_checkpointing=False, resume="",
        asa=True, asa_overrides={"block_size": 16, "num_keep": 4}, attention_backend="torch",
        **tiny_video_size(family),
    )
    values.update(overrides)
    return build_config(values)


def make_distiller(family: str, embeddings, output_dir, **overrides):
    from accelerate import Accelerator

    from training.distill import Distiller
    from training.prompts import PromptEmbeddings

    config = make_config(family, embeddings, output_dir, **overrides)
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    torch.manual_seed(123)
    return Distiller(config, tiny_bundle(family), PromptEmbeddings.open(embeddings), accelerator)
