"""What the nodes do on tiny models: clone-not-mutate, cancel mid-run with the model still usable, ComfyUI latent
scaling, CONDITIONING conversion, errors that say what to change, and the ComfyUI hooks (stubbed here)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from blade_tiny_files import LORA_NAMES, TINY_NAMES


@pytest.fixture(scope="module")
def wan_embeds(nodes, models_dir):
    (te,) = nodes["BladeTextEncoderLoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["wan"]), "wan", "fp32")
    (embeds,) = nodes["BladeTextEncode"]().encode(te, "a red ball bouncing", "")
    return embeds


@pytest.fixture
def comfy_stub(monkeypatch):
    """Stand-ins for comfy.model_management and comfy.utils that record what the nodes call."""
    calls: dict[str, list] = {"unload": [], "progress": [], "interrupt_checks": []}
    state = {"interrupt_after": None}

    class InterruptProcessingException(Exception):
        pass

    def throw_exception_if_processing_interrupted():
        calls["interrupt_checks"].append(1)
        limit = state["interrupt_after"]
        if limit is not None and len(calls["interrupt_checks"]) > limit:
            raise InterruptProcessingException()

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            calls["progress"].append((value, total))

    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.unload_all_models = lambda: calls["unload"].append("unload_all_models")
    mm.soft_empty_cache = lambda force=False: calls["unload"].append("soft_empty_cache")
    mm.get_torch_device = lambda: torch.device("cpu")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils = mm, utils
    for name, module in (("comfy", comfy), ("comfy.model_management", mm), ("comfy.utils", utils)):
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(calls=calls, state=state, Interrupt=InterruptProcessingException)


SIZE = dict(width=64, height=64, frames=5)


def _sample(nodes, model, embeds, seed=1, **kw):
    args = dict(seed=seed, steps=2, guidance=1.0, scheduler="blade", **SIZE)
    args.update(kw)
    return nodes["BladeSampler"]().sample(model, embeds, **args)[0]


def test_asa_and_lora_nodes_clone_and_keep_the_input(pack, nodes, wan, models_dir):
    from blade_pack.blade_ops.attention import get_asa_handle

    custom = "custom (values below)"
    (sparse,) = nodes["BladeASA"]().patch(wan, custom, "torch", 0.9, 0.05, 0.17, 16, True, 30, 1, "0")
    assert sparse is not wan and wan.asa is None and wan.loras == ()
    assert sparse.asa.source == "custom" and sparse.asa.backend == "torch"
    assert sparse.asa.config.tau == 0.9 and sparse.asa.config.dense_layers == (0,)
    lora_path = str(models_dir / "loras" / LORA_NAMES["wan"])
    (one,) = nodes["BladeLoraLoader"]().patch(sparse, lora_path, 0.5)
    (two,) = nodes["BladeLoraLoader"]().patch(one, lora_path, 1.0)
    assert sparse.loras == () and len(one.loras) == 1 and [p.strength for p in two.loras] == [0.5, 1.0]
    assert two.bundle.transformer is wan.bundle.transformer  # shared, not copied
    assert get_asa_handle(wan.bundle.transformer) is None  # nothing installed until a run


def test_asa_custom_ratio_and_gap(nodes, wan):
    (m,) = nodes["BladeASA"]().patch(wan, "custom (values below)", "auto", 0.95, 0.05, 0.3, 32, False, 12, 0, "")
    assert m.asa.config.max_ratio == 0.3 and m.asa.config.sample_gap == 12 and m.asa.config.use_global is False
    assert m.asa.config.estimate_precision == "auto"


@pytest.mark.parametrize("settings, family, expect", [
    ("family defaults", "wan", (0.17, 30)),
    ("family defaults", "cogvideox", (0.10, 15)),
    ("LoRA's, else family defaults", "cogvideox", (0.10, 15)),
    ("custom (values below)", "cogvideox", (0.3, 12)),
])
def test_asa_settings_choice_decides_the_run_config(nodes, wan, settings, family, expect):
    """The widgets show real values; the settings combo says whether they, the family's or the LoRA's apply."""
    import dataclasses

    from blade_pack.blade_ops.prepare import resolve_asa_config

    model = dataclasses.replace(wan, bundle=dataclasses.replace(wan.bundle, family=_family(family)))
    (m,) = nodes["BladeASA"]().patch(model, settings, "torch", 0.95, 0.05, 0.3, 32, True, 12, 2, "1")
    config, _ = resolve_asa_config(m.asa, [])
    assert (config.max_ratio, config.sample_gap) == expect
    assert config.dense_steps == 2 and config.dense_layers == (1,)  # run choices always from the node


def _family(name):
    from blade_pack.blade_ops.families import get_family

    return get_family(name)


def test_asa_rejects_nan_with_the_input_name(nodes, wan):
    with pytest.raises(ValueError, match=r"BLADE ASA \(sparse attention\): max_ratio is nan"):
        nodes["BladeASA"]().patch(wan, "custom (values below)", "torch", 0.95, 0.05, float("nan"), 32, True, 30, 0, "")


def test_asa_estimate_precision(nodes, wan):
    (m,) = nodes["BladeASA"]().patch(wan, "family defaults", "auto", 0.95, 0.05, 0.17, 32, True, 30, 0, "",
                                     estimate_precision="bf16")
    assert m.asa.config.estimate_precision == "bf16"
    with pytest.raises(ValueError, match="estimate_precision='int4' is not one of"):
        nodes["BladeASA"]().patch(wan, "family defaults", "auto", 0.95, 0.05, 0.17, 32, True, 30, 0, "",
                                  estimate_precision="int4")


def test_dense_layers_parsing(pack):
    from blade_pack.nodes.asa import parse_layers

    assert parse_layers("0, 1, 28-29") == (0, 1, 28, 29) and parse_layers(" ") == ()
    with pytest.raises(ValueError, match="0, 1, 28-29"):
        parse_layers("first")


def test_lora_for_another_family_is_refused(nodes, wan, models_dir):
    with pytest.raises(ValueError) as err:
        nodes["BladeLoraLoader"]().patch(wan, str(models_dir / "loras" / LORA_NAMES["cogvideox"]), 1.0)
    assert "matched" in str(err.value) or "cogvideox" in str(err.value).lower()


def test_missing_model_file_says_where_to_put_it(nodes, comfy_env):
    with pytest.raises(FileNotFoundError, match="models/diffusion_models"):
        nodes["BladeModelLoader"]().load("wan2.1_t2v_1.3B_bf16.safetensors", "auto", "bf16")


def test_impossible_size_names_valid_values(nodes, wan, wan_embeds):
    with pytest.raises(ValueError, match="multiple of 16"):
        _sample(nodes, wan, wan_embeds, width=100)
    with pytest.raises(ValueError, match="4k\\+1"):
        _sample(nodes, wan, wan_embeds, frames=6)


def test_fp8_linear_precision_without_fp8_tensor_cores_is_an_error(nodes, wan, wan_embeds, monkeypatch):
    import blade_pack.nodes.sampler as sampler

    monkeypatch.setattr(sampler.bridge, "torch_device", lambda: torch.device("cpu"))
    with pytest.raises(RuntimeError, match=r"fp8 tensor cores \(compute capability 8\.9 or later"):
        _sample(nodes, wan, wan_embeds, linear_precision="fp8_e4m3 (per-channel)")
    with pytest.raises(ValueError, match="linear_precision='fp16' is not one of"):
        _sample(nodes, wan, wan_embeds, linear_precision="fp16")


def test_guidance_without_negative_is_explained(pack, nodes, wan):
    from blade_pack.blade_ops.text import PromptEmbeds

    embeds = PromptEmbeds(torch.zeros(1, 512, 32))
    with pytest.raises(ValueError, match="negative prompt"):
        _sample(nodes, wan, embeds, guidance=5.0)


def test_latent_is_comfyui_wan_scaled_and_repeatable(nodes, wan, wan_embeds):
    a = _sample(nodes, wan, wan_embeds, seed=7)
    b = _sample(nodes, wan, wan_embeds, seed=7)
    assert torch.equal(a["samples"], b["samples"])
    assert a["samples"].shape == (1, 16, 2, 8, 8)
    # ComfyUI's Wan21 latent format: process_out(x) = x * std + mean, channel 0: std 2.8184, mean -0.7571.
    model_space = a["blade"]["latents"]
    assert torch.allclose(a["samples"][:, 0], model_space[:, 0] * 2.8184 - 0.7571, atol=1e-5)


def test_latent_input_sets_size_and_batch(nodes, wan, wan_embeds):
    empty = {"samples": torch.zeros(2, 16, 2, 8, 8)}
    out = _sample(nodes, wan, wan_embeds, latent=empty, width=832, height=480, frames=81)
    assert out["samples"].shape == (2, 16, 2, 8, 8)
    with pytest.raises(ValueError, match="video LATENT"):
        _sample(nodes, wan, wan_embeds, latent={"samples": torch.zeros(1, 4, 8, 8)})


def test_cancel_stops_within_a_step_and_model_stays_usable(pack, nodes, wan, wan_embeds, models_dir, comfy_stub):
    from blade_pack.blade_ops.attention import get_asa_handle
    from blade_pack.blade_ops.lora import applied_loras

    (sparse,) = nodes["BladeASA"]().patch(wan, "family defaults", "torch", 0.95, 0.05, 0.17, 32, True, 30, 0, "")
    (model,) = nodes["BladeLoraLoader"]().patch(sparse, str(models_dir / "loras" / LORA_NAMES["wan"]), 1.0)
    before = _sample(nodes, model, wan_embeds, steps=3)
    assert [v for v, _ in comfy_stub.calls["progress"]] == [1, 2, 3]
    assert "unload_all_models" in comfy_stub.calls["unload"]
    comfy_stub.calls["interrupt_checks"].clear()
    comfy_stub.state["interrupt_after"] = 2  # the check before sampling, step 1, then Cancel at step 2
    with pytest.raises(comfy_stub.Interrupt):
        _sample(nodes, model, wan_embeds, steps=3)
    assert len(comfy_stub.calls["interrupt_checks"]) == 3
    transformer = wan.bundle.transformer
    assert get_asa_handle(transformer) is None and not applied_loras(transformer)
    comfy_stub.state["interrupt_after"] = None
    after = _sample(nodes, model, wan_embeds, steps=3)
    assert torch.equal(before["samples"], after["samples"])
    plain = _sample(nodes, wan, wan_embeds, steps=3)
    assert not torch.equal(plain["samples"], after["samples"])  # the patches did change the result


def _seen_patches(transformer) -> list:
    """A forward pre-hook's record of what ``transformer`` carries at each call: (ASA on, LoRA strengths)."""
    from blade_pack.blade_ops.attention import get_asa_handle
    from blade_pack.blade_ops.lora import applied_loras

    seen: list = []

    def hook(module, args):
        seen.append((get_asa_handle(module) is not None, [e.strength for e in applied_loras(module).values()]))

    return seen, transformer.register_forward_pre_hook(hook)


def test_patches_stay_on_while_the_request_is_the_same(pack, nodes, wan, wan_embeds, models_dir, monkeypatch):
    """A second run with the same ASA + LoRA request puts nothing on again; another strength swaps the LoRA; a run
    of the unpatched model (a baseline branch) sees no patch; each run's result is that of a fresh install."""
    import blade_pack.blade_ops.prepare as prepare
    from blade_pack.blade_ops.attention import get_asa_handle
    from blade_pack.nodes.patching import unpatch

    installs = []
    real = prepare.prepare_transformer
    monkeypatch.setattr(prepare, "prepare_transformer", lambda *a, **kw: installs.append(kw) or real(*a, **kw))
    transformer = wan.bundle.transformer
    (sparse,) = nodes["BladeASA"]().patch(wan, "family defaults", "torch", 0.95, 0.05, 0.17, 32, True, 30, 0, "")
    lora = str(models_dir / "loras" / LORA_NAMES["wan"])
    (full,) = nodes["BladeLoraLoader"]().patch(sparse, lora, 1.0)
    (half,) = nodes["BladeLoraLoader"]().patch(sparse, lora, 0.5)
    seen, hook = _seen_patches(transformer)
    try:
        first = _sample(nodes, full, wan_embeds, steps=1)
        handle = get_asa_handle(transformer)
        again = _sample(nodes, full, wan_embeds, steps=1)
        assert len(installs) == 1 and get_asa_handle(transformer) is handle  # nothing taken off or put on again
        assert torch.equal(first["samples"], again["samples"])
        swapped = _sample(nodes, half, wan_embeds, steps=1)
        assert len(installs) == 2
        plain = _sample(nodes, wan, wan_embeds, steps=1)
        assert len(installs) == 2  # nothing to put on
        unpatch(transformer)
        fresh = _sample(nodes, half, wan_embeds, steps=1)
    finally:
        hook.remove()
        unpatch(transformer)
    assert seen == [(True, [1.0])] * 2 + [(True, [0.5])] + [(False, [])] + [(True, [0.5])]
    assert torch.equal(swapped["samples"], fresh["samples"])
    assert not torch.equal(plain["samples"], first["samples"])


def test_a_failed_install_leaves_the_model_clean(pack, nodes, wan, wan_embeds, models_dir, monkeypatch):
    """Patches left on by a run are taken off before the next install; when that install fails, nothing stays."""
    import blade_pack.blade_ops.lora as lora_ops
    from blade_pack.blade_ops.attention import get_asa_handle
    from blade_pack.blade_ops.lora import applied_loras
    from blade_pack.nodes.patching import installed_patches

    transformer = wan.bundle.transformer
    (sparse,) = nodes["BladeASA"]().patch(wan, "family defaults", "torch", 0.95, 0.05, 0.17, 32, True, 30, 0, "")
    lora = str(models_dir / "loras" / LORA_NAMES["wan"])
    (model,) = nodes["BladeLoraLoader"]().patch(sparse, lora, 1.0)
    (other,) = nodes["BladeLoraLoader"]().patch(sparse, lora, 0.7)
    before = _sample(nodes, model, wan_embeds, steps=1)
    assert installed_patches(transformer) is not None

    def broken(*args, **kwargs):
        raise RuntimeError("damaged LoRA")

    with monkeypatch.context() as m:
        m.setattr(lora_ops, "apply_lora", broken)
        with pytest.raises(RuntimeError, match="damaged LoRA"):
            _sample(nodes, other, wan_embeds, steps=1)
    assert get_asa_handle(transformer) is None and not applied_loras(transformer)
    assert installed_patches(transformer) is None
    after = _sample(nodes, model, wan_embeds, steps=1)  # still usable, with its patches put on again
    assert torch.equal(before["samples"], after["samples"])
    _sample(nodes, wan, wan_embeds, steps=1)  # leave the shared model unpatched for the next tests
    assert installed_patches(transformer) is None


def test_conditioning_is_padded_like_diffusers(pack, nodes):
    hidden = torch.randn(1, 7, 4096)
    mask = torch.ones(1, 7)
    mask[0, 5:] = 0
    (embeds,) = nodes["BladeConditioningToEmbeds"]().convert([[hidden, {"attention_mask": mask}]], "wan",
                                                             [[torch.randn(1, 3, 4096), {}]])
    assert embeds.cond.shape == (1, 512, 4096) and embeds.uncond.shape == (1, 512, 4096)
    assert torch.equal(embeds.cond[0, :5], hidden[0, :5]) and not embeds.cond[0, 5:].any()
    (long,) = nodes["BladeConditioningToEmbeds"]().convert([[torch.randn(2, 600, 16), {}]], "wan")
    assert long.cond.shape == (2, 512, 16) and long.uncond is None
    with pytest.raises(ValueError, match="CONDITIONING"):
        nodes["BladeConditioningToEmbeds"]().convert("a prompt", "wan")


def test_decode_refuses_foreign_latents(nodes, models_dir, wan, wan_embeds):
    (vae,) = nodes["BladeVAELoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["cogvideox"]), "auto", "fp32")
    latent = _sample(nodes, wan, wan_embeds)
    with pytest.raises(ValueError, match="cogvideox VAE|wan VAE"):
        nodes["BladeVAEDecode"]().decode(vae, latent, False)
    with pytest.raises(ValueError, match=r"\[batch, 16, frames, height, width\].*ComfyUI's own VAE Decode"):
        nodes["BladeVAEDecode"]().decode(vae, {"samples": torch.zeros(1, 4, 8, 8)}, False)
    with pytest.raises(ValueError, match="not a ComfyUI LATENT"):
        nodes["BladeVAEDecode"]().decode(vae, {"blade": latent["blade"]}, False)


def test_decode_takes_native_comfyui_latents(pack, nodes, models_dir, wan, wan_embeds):
    """A LATENT in ComfyUI's Wan21 scale (KSampler's output) decodes like BLADE Sampler's own latents; a LATENT
    changed after BLADE Sampler decodes its new samples, not the stale exact latents."""
    from blade_pack.nodes.video import model_latents

    (vae,) = nodes["BladeVAELoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["wan"]), "auto", "fp32")
    latent = _sample(nodes, wan, wan_embeds)
    assert torch.equal(model_latents(latent, vae), latent["blade"]["latents"])  # exact when untouched
    native = {"samples": latent["samples"].clone()}
    torch.testing.assert_close(model_latents(native, vae), latent["blade"]["latents"], rtol=0, atol=1e-6)
    (ours,) = nodes["BladeVAEDecode"]().decode(vae, latent, False)
    (theirs,) = nodes["BladeVAEDecode"]().decode(vae, native, False)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    changed = dict(latent, samples=latent["samples"] * 0.5)  # what a latent-editing node does: copy, replace
    assert not torch.allclose(model_latents(changed, vae), latent["blade"]["latents"])
    (halved,) = nodes["BladeVAEDecode"]().decode(vae, changed, False)
    assert not torch.allclose(halved, ours)


def test_decode_compile_toggle(nodes, models_dir, wan, wan_embeds):
    """'compile' compiles the Wan decoder only on a CUDA device; switching it off undoes an earlier compile of the
    shared VAE, and the frames stay the same."""
    from blade_pack.blade_ops.pipeline.wan_decode import is_decoder_compiled
    from blade_pack.nodes.video import _set_decoder_compiled

    (vae,) = nodes["BladeVAELoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["wan"]), "auto", "fp32")
    latent = _sample(nodes, wan, wan_embeds)
    (eager,) = nodes["BladeVAEDecode"]().decode(vae, latent, False)
    (on_cpu,) = nodes["BladeVAEDecode"]().decode(vae, latent, False, True)  # this machine's device is the CPU
    assert not is_decoder_compiled(vae.vae) and torch.equal(on_cpu, eager)
    _set_decoder_compiled(vae.vae, True)  # what a run on a GPU leaves behind
    assert is_decoder_compiled(vae.vae)
    (again,) = nodes["BladeVAEDecode"]().decode(vae, latent, False, False)
    assert not is_decoder_compiled(vae.vae) and torch.equal(again, eager)


def test_decode_and_save(nodes, models_dir, wan, wan_embeds, comfy_env):
    from blade_pack.blade_ops.video_io import read_mp4

    (vae,) = nodes["BladeVAELoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["wan"]), "auto", "fp32")
    latent = _sample(nodes, wan, wan_embeds)
    (tiled,) = nodes["BladeVAEDecode"]().decode(vae, latent, True)
    (images,) = nodes["BladeVAEDecode"]().decode(vae, latent, False)
    assert images.shape == (5, 64, 64, 3) and tiled.shape == images.shape
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    first = nodes["BladeSaveVideo"]().save(images, "clips/test", 16.0, 19)
    second = nodes["BladeSaveVideo"]().save(images, "clips/test", 16.0, 19)
    a, b = first["ui"]["images"][0], second["ui"]["images"][0]
    assert a["subfolder"] == "clips" and a["filename"] != b["filename"] and first["ui"]["animated"] == (True,)
    frames, _ = read_mp4(comfy_env / "clips" / b["filename"])
    assert frames.shape[0] == 5


def test_bridge_uses_folder_paths_inside_comfyui(pack, models_dir, monkeypatch, tmp_path):
    from blade_pack.nodes import comfy_bridge as bridge

    fp = types.ModuleType("folder_paths")
    folders = {"loras": [str(models_dir / "loras")], "diffusers": [str(models_dir / "diffusers")],
               "diffusion_models": [str(tmp_path)]}
    fp.get_folder_paths = lambda name: folders[name]
    fp.get_filename_list = lambda name: sorted(p.name for d in folders[name] for p in __import__("pathlib").Path(d)
                                               .iterdir() if p.is_file())
    fp.get_full_path = lambda name, f: next((f"{d}/{f}" for d in folders[name]
                                            if __import__("os").path.isfile(f"{d}/{f}")), None)
    fp.get_output_directory = lambda: str(tmp_path / "out")
    fp.get_save_image_path = lambda prefix, out, w, h: (out, prefix, 1, "", prefix)
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    assert bridge.in_comfyui()
    assert LORA_NAMES["wan"] in bridge.model_choices("loras")
    assert TINY_NAMES["wan"] in bridge.model_choices("diffusion_models", diffusers=True)
    assert bridge.resolve_model_path(LORA_NAMES["wan"], "loras").is_file()
    assert bridge.resolve_model_path(TINY_NAMES["wan"], "diffusion_models", diffusers=True).is_dir()
    with pytest.raises(FileNotFoundError, match="press R"):
        bridge.resolve_model_path("nothing.safetensors", "loras")
    (tmp_path / "out").mkdir()
    path, name, sub = bridge.save_path("BLADE", 64, 64, "mp4")
    assert path.parent == tmp_path / "out" and name == "BLADE_00001_.mp4" and sub == ""


def test_out_of_memory_becomes_advice(pack):
    from blade_pack.nodes import comfy_bridge as bridge

    with pytest.raises(RuntimeError, match="Lower the size"):
        with bridge.oom_advice("sampling", "Lower the size."):
            raise torch.OutOfMemoryError("CUDA out of memory")


def test_sampler_node_runs_the_pipeline_function(pack, nodes, wan, wan_embeds):
    from blade_pack.blade_ops.pipeline import latent_grid, sample_latents

    out = _sample(nodes, wan, wan_embeds, seed=3, steps=2, scheduler="tdm")
    grid = latent_grid(wan.family, **SIZE)
    assert torch.equal(out["blade"]["latents"], sample_latents(wan.bundle, wan_embeds, grid=grid, sampler="tdm",
                                                               steps=2, seed=3))


def test_text_encoder_loader_takes_a_comfyui_file(pack, nodes, tmp_path, monkeypatch):
    """A single UMT5 file in models/text_encoders (ComfyUI's layout, tokenizer folder beside it) is listed, loads
    as Wan's encoder and gives the original encoder's embeddings."""
    from safetensors.torch import save_file
    from transformers import UMT5Config, UMT5EncoderModel

    from blade_ops.families import get_family
    from blade_ops.models.bundle import ModelBundle
    from blade_ops.models.tiny import build_word_tokenizer
    from blade_ops.text import encode_text

    tokenizer = build_word_tokenizer()
    torch.manual_seed(0)
    original = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                           num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                           feed_forward_proj="gated-gelu")).eval()
    folder = tmp_path / "text_encoders"
    folder.mkdir()
    state = {k: v.contiguous() for k, v in original.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(state, folder / "umt5_tiny.safetensors")
    tokenizer.save_pretrained(folder / "umt5_tiny_tokenizer")
    monkeypatch.setenv("BLADE_MODELS_DIR", str(tmp_path))
    choices = nodes["BladeTextEncoderLoader"].INPUT_TYPES()["required"]["text_encoder_name"][0]
    assert "umt5_tiny.safetensors" in choices
    (te,) = nodes["BladeTextEncoderLoader"]().load("umt5_tiny.safetensors", "auto", "fp32")
    assert te.family.name == "wan"
    reference = encode_text(ModelBundle(get_family("wan"), text_encoder=original, tokenizer=tokenizer), ["a red cat"])
    (embeds,) = nodes["BladeTextEncode"]().encode(te, "a red cat", "")
    assert torch.equal(embeds.cond, reference)
    with pytest.raises(ValueError, match="which is wan's; cogvideox needs T5"):
        nodes["BladeTextEncoderLoader"]().load("umt5_tiny.safetensors", "cogvideox", "fp32")
