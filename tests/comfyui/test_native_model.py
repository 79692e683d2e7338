"""BLADE on ComfyUI's own Wan models, in this process: core's loader builds core's WanModel from tiny files in
core's formats, core's samplers run it, and the pack's MODEL -> MODEL nodes patch it.

- ASA with every block kept and no global branch equals core's dense output (fp32, <= 1e-5);
- BLADE on core's model (ASA + LoRA + schedule + UniPC) equals BLADE on diffusers' Wan with the same weights;
- the LoRA node patches exactly the LoRA's modules, through core's patcher, and core's unpatch restores them;
- the ASA settings a BLADE LoRA records reach the ASA patch; a later override cannot push ASA off;
- Wan2.2 TI2V-5B (48 channels), Wan2.1 I2V (image tokens in cross-attention), bf16 and fp8_scaled files.

Needs $COMFYUI_PATH and a Python that runs ComfyUI (skipped otherwise, with the reason).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lora"))

import core_wan as cw  # noqa: E402

pytestmark = pytest.mark.comfyui

LATENT = (1, 16, 3, 32, 32)  # grid 3 x 16 x 16 = 768 tokens = 6 ASA blocks of 128
CUSTOM = "custom (values below)"


@pytest.fixture(scope="module")
def comfy():
    return cw.import_comfy()


@pytest.fixture(scope="module")
def nodes(pack, comfy):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("core_wan")
    model = cw.tiny_diffusers_wan()
    return model, cw.save_core_file(model, root / "tiny_wan_t2v.safetensors"), root


@pytest.fixture(scope="module")
def core_model(comfy, files):
    return cw.load_core(comfy, files[1])


def _asa(nodes, model, settings="family defaults", **kw):
    values = dict(backend="torch", tau=0.95, min_ratio=0.05, max_ratio=0.17, num_keep=32, use_global=True,
                  sample_gap=30, dense_steps=0, dense_blocks="", start_percent=0.0, end_percent=1.0)
    values.update(kw)
    return nodes["BladeNativeASA"]().patch(model, settings, **values)[0]


def _blade_sampler(comfy, nodes):
    return nodes["BladeUniPCSampler"]().sampler()[0]


def _sample_blade(comfy, nodes, model, steps=3, seed=0):
    sigmas = nodes["BladeSchedule"]().sigmas(steps, 3.0)[0]
    latent = torch.zeros(LATENT)
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))
    positive = cw.conditioning()
    negative = [[torch.zeros_like(positive[0][0]), {}]]
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        out = comfy.sample.sample_custom(model, noise, 1.0, _blade_sampler(comfy, nodes), sigmas, positive, negative,
                                         latent, disable_pbar=True, seed=seed)
    return model.model.process_latent_in(out)  # back to the model's latent space, where the pack samples


def test_asa_all_blocks_kept_equals_core_dense(comfy, nodes, core_model):
    dense = _sample_blade(comfy, nodes, core_model)
    patched = _asa(nodes, core_model, CUSTOM, min_ratio=1.0, max_ratio=1.0, use_global=False)
    out = _sample_blade(comfy, nodes, patched)
    state = patched.model_options["transformer_options"]["optimized_attention_override"].blade_asa_state
    assert state.last_report.sparse_calls == 3 * 2 and math.isclose(state.last_report.mean_density, 1.0)
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=0)
    assert core_model.model_options["transformer_options"].get("optimized_attention_override") is None  # cloned


def _tiny_blade_lora(files, asa: dict | None, seed: int = 3) -> Path:
    from blade_ops.lora import save_lora

    model, _, root = files
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".attn" in name and name.endswith((".to_q", ".to_k", ".to_v",
                                                                                      ".to_out.0")):
            state[f"{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=g) * 0.05
            state[f"{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=g) * 0.05
    meta = {"family": "wan", "rank": 4, "alpha": 4, "steps": 8}
    if asa is not None:
        meta["asa"] = asa
    return save_lora(root / f"blade_lora_{seed}_{bool(asa)}.safetensors", state, meta)


def test_blade_on_core_model_equals_blade_on_diffusers(comfy, nodes, files, core_model):
    """ASA (sparse: 2 of 6 key blocks) + BLADE LoRA with recorded settings + 8-step schedule + UniPC, both paths."""
    from blade_ops.attention import ASAConfig
    from blade_ops.families import WAN
    from blade_ops.lora import read_lora
    from blade_ops.prepare import AsaRequest, prepared_transformer
    from blade_ops.sampling import make_sampler

    recorded = ASAConfig(num_keep=16, tau=0.9, min_ratio=0.2, max_ratio=0.33, sample_gap=20).to_dict()
    lora_path = _tiny_blade_lora(files, recorded)
    patched = _asa(nodes, core_model, "LoRA's, else family defaults")
    patched = nodes["BladeNativeLoRA"]().patch(patched, str(lora_path), 1.0)[0]
    core_out = _sample_blade(comfy, nodes, patched, steps=8)
    state = patched.model_options["transformer_options"]["optimized_attention_override"].blade_asa_state
    assert state.last_report.settings_origin == "LoRA #1's metadata"
    assert 0.3 < state.last_report.mean_density < 0.4  # 2 of 6 key blocks kept per row: sparse for real

    transformer = files[0]
    request = AsaRequest("wan", ASAConfig.for_family("wan"), "torch", source="lora")
    sampler = make_sampler("blade", WAN, steps=8)
    x = torch.randn(LATENT, generator=torch.Generator().manual_seed(0))
    context = cw.conditioning()[0][0]
    with prepared_transformer(transformer, asa=request, loras=[(read_lora(lora_path), 1.0)]) as prepared, \
            torch.no_grad():
        assert prepared.asa_origin == "LoRA #1's metadata"
        for i, t in enumerate(sampler.timesteps):
            v = transformer(hidden_states=x, timestep=t.reshape(1).float(), encoder_hidden_states=context,
                            return_dict=False)[0]
            x = sampler.step(i, v, x, None)
        density = prepared.asa_handle.stats.mean_density
    assert math.isclose(density, state.last_report.mean_density, abs_tol=1e-6)
    torch.testing.assert_close(core_out, x, atol=1e-4, rtol=1e-4)


def _lora_keys(lora_path: Path) -> set[str]:
    from blade_ops.lora import read_lora
    from blade_ops.models.keymaps import wan_transformer_key_to_original

    return {"diffusion_model." + wan_transformer_key_to_original(m + ".weight") for m in read_lora(lora_path).modules}


@pytest.mark.parametrize("naming", ["diffusers", "kohya", "kohya_flat", "original_wan"])
def test_lora_node_patches_exactly_its_modules_and_unpatch_restores(comfy, nodes, files, core_model, naming):
    from lora_helpers import random_lora, write_diffusers, write_kohya, write_original_wan

    model, _, root = files
    lora = random_lora(model, "wan", rank=4, seed=5)
    path = root / f"lora_{naming}.safetensors"
    {"diffusers": lambda: write_diffusers(path, lora), "kohya": lambda: write_kohya(path, lora, "wan"),
     "kohya_flat": lambda: write_kohya(path, lora, "wan", flat=True),
     "original_wan": lambda: write_original_wan(path, lora)}[naming]()
    expected = _lora_keys(path)
    assert len(expected) == len(lora.factors) == 2 * (8 + 2)  # 2 blocks x (2 attentions x 4 + 2 ffn)
    patched = nodes["BladeNativeLoRA"]().patch(core_model, str(path), 0.7)[0]
    assert set(patched.patches) == expected and not core_model.patches  # the input model is untouched
    comfy.model_management.unload_all_models()  # an earlier test's patched clone may still be loaded
    sd = core_model.model.state_dict()
    before = {k: sd[k].clone() for k in expected}
    comfy.model_management.load_models_gpu([patched], force_full_load=True)
    now = core_model.model.state_dict()  # core puts patched weights in as new parameters
    for module, (a, b, alpha) in lora.factors.items():
        key = "diffusion_model." + module_key(module)
        want = before[key] + 0.7 * (b @ a) * (alpha / a.shape[0])
        torch.testing.assert_close(now[key], want, atol=1e-6, rtol=1e-5)
    patched.unpatch_model(device_to=torch.device("cpu"))
    after = core_model.model.state_dict()
    for key in expected:
        assert torch.equal(after[key], before[key]), f"{key} not restored"


def module_key(module: str) -> str:
    from blade_ops.models.keymaps import wan_transformer_key_to_original

    return wan_transformer_key_to_original(module + ".weight")


def test_core_lora_loader_misses_blades_release_naming(comfy, files, core_model):
    """Why the pack has its own LoRA node: core's loader finds none of BLADE's diffusers-named keys (a125cd8)."""
    lora_path = _tiny_blade_lora(files, None)
    lora_sd = comfy.utils.load_torch_file(str(lora_path))
    patched, _ = comfy.sd.load_lora_for_models(core_model, None, lora_sd, 1.0, 0)
    ours = _lora_keys(lora_path)
    assert len(set(patched.patches) & ours) < len(ours), "core maps BLADE's naming now; the pack's node may go"


def test_lora_for_another_width_is_refused_whole(comfy, nodes, files, core_model):
    from lora_helpers import random_lora, write_diffusers

    model, _, root = files
    path = write_diffusers(root / "wide.safetensors", random_lora(model, "wan", width=512, seed=2))
    with pytest.raises(ValueError, match=r"do not fit this Wan model.*Nothing was applied"):
        nodes["BladeNativeLoRA"]().patch(core_model, str(path), 1.0)
    with pytest.raises(ValueError, match=r"\(ComfyUI model\): strength is nan; set strength to a finite number"):
        nodes["BladeNativeLoRA"]().patch(core_model, str(path), float("nan"))


def test_asa_stays_on_top_of_a_later_override_and_declines_to_it(comfy, nodes, core_model):
    calls = []

    def later(func, q, k, v, heads, **kwargs):
        calls.append(q.shape[1] == k.shape[1])
        return func(q, k, v, heads, **kwargs)

    patched = _asa(nodes, core_model, CUSTOM, min_ratio=1.0, max_ratio=1.0, use_global=False, dense_blocks="1")
    patched = patched.clone()
    patched.model_options["transformer_options"]["optimized_attention_override"] = later  # e.g. another pack's
    callbacks = patched.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_PREPARE_STATE)
    options = patched.model_options
    for callback in callbacks:  # what newer ComfyUI does before each step, with the run's options
        callback(patched, torch.tensor([1.0]), options)
    top = options["transformer_options"]["optimized_attention_override"]
    assert top.blade_previous is later
    cw.core_forward(patched, torch.randn(LATENT), torch.tensor([500.0]), cw.conditioning()[0][0])
    # block 0 self-attention is ASA's; block 1 (dense_blocks) and both cross-attentions go to the later override
    assert calls == [False, True, False]


@pytest.mark.parametrize("variant, fmt", [("t2v", "bf16"), ("t2v", "fp8_scaled"), ("ti2v_5b", "fp32"),
                                          ("i2v", "fp32")])
def test_variants_and_file_formats(comfy, nodes, tmp_path, variant, fmt):
    model = cw.tiny_diffusers_wan(variant, seed=4)
    path = cw.save_core_file(model, tmp_path / f"{variant}_{fmt}.safetensors", fmt)
    core = cw.load_core(comfy, path, dtype={"fp8_scaled": None, "bf16": torch.bfloat16}.get(fmt, torch.float32))
    if fmt == "fp8_scaled":
        assert any(p.dtype == torch.float8_e4m3fn for p in core.model.diffusion_model.parameters())
    channels = 48 if variant == "ti2v_5b" else 16
    x = torch.randn(1, channels, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if variant == "i2v":
        x = torch.cat([x, torch.randn(1, 20, 3, 32, 32)], dim=1)  # mask + image latent channels
    kwargs = {"clip_fea": torch.randn(1, 257, 1280)} if variant == "i2v" else {}
    t, context = torch.tensor([700.0]), cw.conditioning()[0][0]
    dense = cw.core_forward(core, x, t, context, **kwargs)
    kept = cw.core_forward(_asa(nodes, core, CUSTOM, min_ratio=1.0, max_ratio=1.0, use_global=False), x, t, context,
                           **kwargs)
    sparse_model = _asa(nodes, core)
    sparse = cw.core_forward(sparse_model, x, t, context, **kwargs)
    tol = 1e-5 if fmt == "fp32" else 2e-2
    torch.testing.assert_close(kept.float(), dense.float(), atol=tol, rtol=tol)
    assert torch.isfinite(sparse).all() and not torch.allclose(sparse, dense, atol=tol)
    state = sparse_model.model_options["transformer_options"]["optimized_attention_override"].blade_asa_state
    assert state.stats.calls == 2 and state.stats.mean_density < 0.5


def test_schedule_node_equals_the_packs_blade_sampler_and_ksampler_settings(comfy, nodes):
    from blade_ops.families import WAN
    from blade_ops.sampling import make_sampler

    sigmas = nodes["BladeSchedule"]().sigmas(8, 3.0)[0]
    sampler = make_sampler("blade", WAN, steps=8)
    assert torch.equal(sigmas, sampler.scheduler.sigmas.float())
    assert (sigmas[:-1] * 1000).long().tolist() == sampler.timesteps.tolist() == [999, 954, 900, 833, 750, 643,
                                                                                   500, 301]

    class FlowShift3(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = FlowShift3()
    sampling.set_parameters(shift=3.0, multiplier=1000)  # ModelSamplingSD3 node, shift 3.0
    ksampler = comfy.samplers.calculate_sigmas(sampling, "simple", 8)  # KSampler scheduler "simple", 8 steps
    assert float((ksampler - sigmas).abs().max()) < 1.7e-3
    timesteps = (ksampler[:-1] * 1000).long()  # what core's Wan is told, truncated as the pack's sampler truncates
    assert (timesteps - sampler.timesteps).abs().max() <= 1


def test_lora_node_on_an_fp8_scaled_model(comfy, nodes, files, tmp_path):
    """Core's patcher applies the LoRA to float8 weights with their scales: the output moves, stays finite."""
    path = cw.save_core_file(cw.tiny_diffusers_wan("t2v", seed=4), tmp_path / "fp8.safetensors", "fp8_scaled")
    core = cw.load_core(comfy, path, dtype=None)
    lora_path = _tiny_blade_lora(files, None, seed=9)
    base = _sample_blade(comfy, nodes, core, steps=2)
    patched = nodes["BladeNativeLoRA"]().patch(core, str(lora_path), 1.0)[0]
    assert len(patched.patches) == 16
    out = _sample_blade(comfy, nodes, patched, steps=2)
    assert torch.isfinite(out).all() and (out - base).abs().max() > 1e-3
