"""The pack's nodes on Wan2.2: BLADE Model Loader reads a TI2V-5B folder and the sampler returns 48-channel latents
that BLADE VAE Decode turns into frames; BLADE Model Loader (two experts) reads A14B's two files, BLADE LoRA Loader
(expert) puts a LoRA on the named expert only, and ASA runs on both experts."""

from __future__ import annotations

import pytest
import torch

from blade_ops.families import WAN22_A14B, WAN22_TI2V
from tests.common import attention_lora
from tests.models.model_helpers import a14b_expert_files

SIZE = {WAN22_TI2V.name: dict(width=128, height=128, frames=5), WAN22_A14B.name: dict(width=64, height=64, frames=5)}
ASA = dict(settings="custom (values below)", backend="torch", tau=0.9, min_ratio=0.3, max_ratio=0.6, num_keep=4,
           use_global=True, sample_gap=4, dense_steps=0, dense_layers="")


def _embeds(nodes, folder):
    (te,) = nodes["BladeTextEncoderLoader"]().load(str(folder), "auto", "fp32")
    return nodes["BladeTextEncode"]().encode(te, "a red ball bouncing", "")[0]


def _sample(nodes, model, embeds, family):
    # A14B at shift 12: of the 8 blade steps the last two (800, 633) are the low-noise expert's
    steps = 8 if family == WAN22_A14B.name else 2
    args = dict(seed=1, steps=steps, guidance=1.0, scheduler="blade", **SIZE[family])
    return nodes["BladeSampler"]().sample(model, embeds, **args)[0]


def test_ti2v_folder_through_the_nodes(nodes, tiny_folder):
    folder = tiny_folder(WAN22_TI2V.name)
    (model,) = nodes["BladeModelLoader"]().load(str(folder), "auto", "fp32")
    assert model.family.name == WAN22_TI2V.name
    (sparse,) = nodes["BladeASA"]().patch(model, **ASA)
    latent = _sample(nodes, sparse, _embeds(nodes, folder), WAN22_TI2V.name)
    assert latent["samples"].shape == (1, 48, 2, 8, 8)
    (vae,) = nodes["BladeVAELoader"]().load(str(folder), "auto", "fp32")
    (frames,) = nodes["BladeVAEDecode"]().decode(vae, latent)
    assert frames.shape == (5, 128, 128, 3) and torch.isfinite(frames).all()


@pytest.fixture(scope="module")
def a14b_files(tiny_folder, tmp_path_factory):
    """Two expert files (high-noise fp8_scaled, low-noise fp32) with 128-wide heads, as the released files have, so
    the loader infers every setting; a LoRA for each."""
    d = tmp_path_factory.mktemp("a14b_files")
    experts, high, low = a14b_expert_files(d)
    return {
        "high": high,
        "low": low,
        "lora": attention_lora(experts[1], d, alpha=8.0),
        "folder": tiny_folder(WAN22_A14B.name),
    }


def test_a14b_experts_loader_lora_per_expert_and_asa(nodes, a14b_files):
    from blade_pack.blade_ops.lora import applied_loras

    loader = nodes["BladeExpertsModelLoader"]()
    assert WAN22_A14B.name in loader.INPUT_TYPES()["required"]["family"][0]
    (model,) = loader.load(str(a14b_files["high"]), str(a14b_files["low"]), WAN22_A14B.name, "fp32")
    bundle = model.bundle
    assert model.family.name == WAN22_A14B.name and bundle.transformer_2 is not None
    embeds = _embeds(nodes, a14b_files["folder"])
    (sparse,) = nodes["BladeASA"]().patch(model, **ASA)
    base = _sample(nodes, sparse, embeds, WAN22_A14B.name)["samples"]

    lora_node = nodes["BladeExpertLoraLoader"]()
    assert lora_node.INPUT_TYPES()["required"]["expert"][0] == ["transformer", "transformer_2"]
    (on_low,) = lora_node.patch(sparse, a14b_files["lora"], 1.0, "transformer_2")
    assert on_low.loras[-1].expert == "transformer_2" and not sparse.loras
    seen = {}
    real = bundle.transformer_2.forward

    def spy(*args, **kwargs):  # what the low-noise expert carries while the sampler runs
        seen["loras"] = list(applied_loras(bundle.transformer_2))
        seen["high"] = list(applied_loras(bundle.transformer))
        seen["asa"] = type(bundle.transformer_2.blocks[0].attn1.processor).__name__
        return real(*args, **kwargs)

    bundle.transformer_2.forward = spy
    try:
        with_lora = _sample(nodes, on_low, embeds, WAN22_A14B.name)
    finally:
        del bundle.transformer_2.forward
    assert len(seen["loras"]) == 1 and seen["high"] == [] and seen["asa"] == "WanASAProcessor"
    assert (with_lora["samples"] - base).abs().max() > 1e-4  # the blade schedule's last steps: low-noise expert
    # ComfyUI's wan_2.1_vae file loads as Wan2.1's VAE; A14B's latents decode with it
    (vae,) = nodes["BladeVAELoader"]().load(str(a14b_files["folder"] / "vae"), "auto", "fp32")
    assert vae.family.name == "wan"
    (frames,) = nodes["BladeVAEDecode"]().decode(vae, with_lora)
    assert frames.shape == (5, 64, 64, 3)
    # the run's patches stay on for a next run with the same request (nodes/patching.py), each on its own expert
    assert len(applied_loras(bundle.transformer_2)) == 1 and not applied_loras(bundle.transformer)
    assert type(bundle.transformer.blocks[0].attn1.processor).__name__ == "WanASAProcessor"
    from blade_pack.blade_ops.families import get_family

    single = type(model)(type(bundle)(family=get_family("wan"), transformer=bundle.transformer))
    with pytest.raises(ValueError, match="BLADE LoRA Loader \\(expert\\): Wan2.1 has no expert 'transformer_2'"):
        lora_node.patch(single, a14b_files["lora"], 1.0, "transformer_2")
