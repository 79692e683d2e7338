"""BLADE's native nodes on a Wan model loaded from GGUF by ComfyUI-GGUF (city96), in this process.

ComfyUI-GGUF's Unet Loader (GGUF) returns core's WanModel whose Linear weights stay GGML-quantised and are
dequantised at each call by its GGMLOps; LoRA patches ride on the quantised weights through its GGUFModelPatcher.
A tiny Wan is written here as a .gguf file the way its converter lays one out (``general.architecture`` "wan",
original Wan keys, the 5-D patch embedding flattened with its ``comfy.gguf.orig_shape`` field) with every block
Linear in Q8_0, the embeddings and head in F16, the rest F32, and loaded through ``UnetLoaderGGUF.load_unet``.
The reference is core's own loader on a safetensors file of the weights the GGUF model computes with (its
dequantisation of each tensor to fp32).

- the GGUF model holds Q8_0 weights that dequantise to the gguf package's values (ComfyUI-GGUF multiplies a Q8_0
  block's fp16 scale by its int8 values in fp16 by default: <= 2^-11 relative) and samples as the dequantised
  model does (fp32, <= 1e-5): the reference is the same model;
- ASA with every block kept and no global branch equals the GGUF model's dense sampling (fp32, <= 1e-5);
- ASA with real sparsity (and a BLADE LoRA after it) runs on it: finite, density below 1, still ComfyUI-GGUF's
  patcher;
- the LoRA node patches exactly the LoRA's 20 quantised weights, moves the output as the same LoRA moves the
  dequantised model's (<= 1e-5), and core's unpatch restores the GGUF model's output.

Needs $COMFYUI_PATH, a ComfyUI-GGUF checkout ($COMFYUI_GGUF_PATH, else $COMFYUI_PATH/custom_nodes/ComfyUI-GGUF)
and the ``gguf`` package in the Python that runs ComfyUI (skipped otherwise, with the reason).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lora"))

import core_wan as cw  # noqa: E402

pytestmark = pytest.mark.comfyui

LATENT = (1, 16, 3, 32, 32)  # grid 3 x 16 x 16 = 768 tokens = 6 ASA blocks of 128
CUSTOM = "custom (values below)"
GGUF_NAME = "tiny_wan_t2v_Q8_0.gguf"
F16_KEYS = ("text_embedding.", "time_embedding.", "time_projection.", "head.head.")  # 2-D, outside the blocks


def _gguf_checkout() -> Path:
    named = os.environ.get("COMFYUI_GGUF_PATH")
    path = Path(named) if named else Path(cw.COMFYUI_PATH) / "custom_nodes" / "ComfyUI-GGUF"
    if not (path / "nodes.py").is_file() or not (path / "loader.py").is_file():
        if named:
            pytest.fail(f"COMFYUI_GGUF_PATH={named} is not a ComfyUI-GGUF checkout (no nodes.py and loader.py).")
        pytest.skip(f"no ComfyUI-GGUF checkout at {path}; clone github.com/city96/ComfyUI-GGUF there or set "
                    "COMFYUI_GGUF_PATH to one")
    return path.resolve()


@pytest.fixture(scope="module")
def comfy():
    return cw.import_comfy()


@pytest.fixture(scope="module")
def gguf(comfy):
    return pytest.importorskip("gguf", reason=f"the gguf package (ComfyUI-GGUF's requirement) is not installed for "
                                              f"{sys.executable}: pip install gguf")


@pytest.fixture(scope="module")
def gguf_pack(comfy, gguf) -> ModuleType:
    """ComfyUI-GGUF imported as ComfyUI imports a custom node folder (its top-level ``nodes`` is ComfyUI's)."""
    root = _gguf_checkout()
    import folder_paths

    saved = sys.modules.get("nodes")  # the pack's own tests must keep whatever `nodes` they had
    try:
        spec = importlib.util.spec_from_file_location("nodes", comfy.root / "nodes.py")
        core_nodes = importlib.util.module_from_spec(spec)
        sys.modules["nodes"] = core_nodes
        spec.loader.exec_module(core_nodes)
        spec = importlib.util.spec_from_file_location(root.name, root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[root.name] = module
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop("nodes", None)
        else:
            sys.modules["nodes"] = saved
    assert "UnetLoaderGGUF" in module.NODE_CLASS_MAPPINGS
    module.folder_paths = folder_paths
    return module


@pytest.fixture(scope="module")
def nodes(pack, comfy):
    return pack.NODE_CLASS_MAPPINGS


def write_gguf(gguf, sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """``sd`` (core's Wan keys, fp32) as a .gguf file; returns the weights the file holds, dequantised to fp32."""
    q8, f16, f32 = (gguf.GGMLQuantizationType[n] for n in ("Q8_0", "F16", "F32"))
    block = gguf.GGML_QUANT_SIZES[q8][0]
    writer = gguf.GGUFWriter(str(path), arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    held = {}
    for key, value in sd.items():
        data = value.float().numpy()
        if data.ndim > 4:  # GGML tensors have at most 4 dims: ComfyUI-GGUF reads the shape back from this field
            writer.add_array(f"comfy.gguf.orig_shape.{key}", [int(d) for d in data.shape])
            data = data.reshape(data.shape[0], -1)
        if key.startswith("blocks.") and data.ndim == 2 and data.shape[-1] % block == 0:
            qtype = q8
        elif data.ndim == 2 and key.startswith(F16_KEYS):
            qtype = f16
        else:
            qtype = f32  # biases, norms, modulation (as ComfyUI-GGUF's converter keeps them), patch embedding
        packed = gguf.quants.quantize(data, qtype)
        writer.add_tensor(key, packed, raw_dtype=qtype)
        held[key] = torch.from_numpy(gguf.quants.dequantize(packed, qtype).reshape(value.shape).copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


@pytest.fixture(scope="module")
def files(tmp_path_factory, gguf):
    """The diffusers tiny Wan, the folder of its GGUF file, and the weights the file holds (gguf's dequantisation)."""
    root = tmp_path_factory.mktemp("gguf_wan")
    model = cw.tiny_diffusers_wan()
    held = write_gguf(gguf, cw.core_state_dict(model), root / GGUF_NAME)
    return model, root, held


@pytest.fixture(scope="module")
def gguf_model(comfy, gguf_pack, files):
    """What Unet Loader (GGUF) gives for the file: a GGUFModelPatcher around core's WanModel."""
    root = files[1]
    gguf_pack.folder_paths.add_model_folder_path("diffusion_models", str(root))
    model = gguf_pack.NODE_CLASS_MAPPINGS["UnetLoaderGGUF"]().load_unet(GGUF_NAME)[0]
    assert isinstance(model.model.diffusion_model, comfy.wan.WanModel)
    return model


def gguf_weights(gguf_pack, model) -> dict[str, torch.Tensor]:
    """The fp32 weights the GGUF model computes with, by core's Wan keys (ComfyUI-GGUF's own dequantisation)."""
    dequantize = gguf_pack.dequant.dequantize_tensor
    params = model.model.diffusion_model.named_parameters()
    return {k: dequantize(p, torch.float32).detach().clone() for k, p in params}


@pytest.fixture(scope="module")
def dequantised_model(comfy, gguf_pack, files, gguf_model):
    """Core's loader (plain Linear layers, core's patcher) on the GGUF model's weights, dequantised, fp32."""
    from safetensors.torch import save_file

    path = files[1] / "tiny_wan_t2v_dequantised.safetensors"
    save_file(gguf_weights(gguf_pack, gguf_model), str(path))
    return cw.load_core(comfy, path)


def _sample(comfy, model, steps: int = 3, seed: int = 0) -> torch.Tensor:
    """Core's sampler on ``model`` (flow-matching sigmas, shift 3, uni_pc_bh2), nothing else loaded before."""
    comfy.model_management.unload_all_models()  # an earlier sampling's patched clone may still be loaded
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
    return cw.sample(comfy, model, sigmas, seed=seed, latent_shape=LATENT)


def _asa(nodes, model, settings="family defaults", **kw):
    values = dict(backend="torch", tau=0.95, min_ratio=0.05, max_ratio=0.17, num_keep=32, use_global=True,
                  sample_gap=30, dense_steps=0, dense_blocks="", start_percent=0.0, end_percent=1.0)
    values.update(kw)
    return nodes["BladeNativeASA"]().patch(model, settings, **values)[0]


def _asa_state(model):
    return model.model_options["transformer_options"]["optimized_attention_override"].blade_asa_state


def _quantised(gguf_pack, weight) -> bool:
    return gguf_pack.dequant.is_quantized(weight)


def test_gguf_model_is_quantised_and_samples_as_its_dequantised_weights(comfy, gguf_pack, files, gguf_model,
                                                                        dequantised_model):
    weights = dict(gguf_model.model.diffusion_model.named_parameters())
    q8 = [k for k, w in weights.items() if _quantised(gguf_pack, w)]
    assert len(q8) == 2 * (8 + 2)  # every Linear of the 2 blocks: 2 attentions x (q, k, v, o) + 2 ffn
    assert {w.tensor_type.name for k, w in weights.items() if k in q8} == {"Q8_0"}
    assert weights["patch_embedding.weight"].shape == (256, 16, 1, 2, 2)  # the 5-D tensor's shape came back
    held = files[2]
    for key, weight in gguf_weights(gguf_pack, gguf_model).items():
        rel = 2.0**-11 if key in q8 else 0.0  # fp16 products of Q8_0 blocks; F16 and F32 tensors come back exact
        torch.testing.assert_close(weight, held[key], atol=0, rtol=rel, msg=key)
    out = _sample(comfy, gguf_model)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _sample(comfy, dequantised_model), atol=1e-5, rtol=0)


def test_asa_all_blocks_kept_equals_gguf_dense(comfy, nodes, gguf_model):
    dense = _sample(comfy, gguf_model)
    patched = _asa(nodes, gguf_model, CUSTOM, min_ratio=1.0, max_ratio=1.0, use_global=False)
    assert type(patched) is type(gguf_model)  # the clone is still ComfyUI-GGUF's patcher
    out = _sample(comfy, patched)
    report = _asa_state(patched).last_report
    assert report.sparse_calls == 3 * 2 and math.isclose(report.mean_density, 1.0)
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=0)
    assert gguf_model.model_options["transformer_options"].get("optimized_attention_override") is None


def test_sparse_asa_then_lora_runs_on_gguf(comfy, nodes, files, gguf_model):
    from lora_helpers import random_lora, write_diffusers

    dense = _sample(comfy, gguf_model)
    sparse = _asa(nodes, gguf_model)
    out = _sample(comfy, sparse)
    report = _asa_state(sparse).last_report
    assert torch.isfinite(out).all() and not torch.allclose(out, dense, atol=1e-3)
    assert report.sparse_calls == 3 * 2 and 0.0 < report.mean_density < 1.0
    path = write_diffusers(files[1] / "lora_after_asa.safetensors", random_lora(files[0], "wan", rank=4, seed=6))
    chained = nodes["BladeNativeLoRA"]().patch(sparse, str(path), 1.0)[0]
    assert type(chained) is type(gguf_model) and len(chained.patches) == 20
    out = _sample(comfy, chained)
    report = _asa_state(chained).last_report
    assert torch.isfinite(out).all() and report.sparse_calls == 3 * 2 and 0.0 < report.mean_density < 1.0


def test_lora_node_on_gguf_moves_output_as_on_dequantised_and_unpatch_restores(
        comfy, nodes, gguf_pack, files, gguf_model, dequantised_model):
    from lora_helpers import random_lora, write_diffusers

    from blade_ops.models.keymaps import wan_transformer_key_to_original

    model, root, _ = files
    lora = random_lora(model, "wan", rank=4, seed=5)
    path = write_diffusers(root / "lora.safetensors", lora)
    expected = {"diffusion_model." + wan_transformer_key_to_original(m + ".weight") for m in lora.factors}
    weights = dict(gguf_model.model.named_parameters())
    assert len(expected) == 20 and all(_quantised(gguf_pack, weights[k]) for k in expected)

    base = _sample(comfy, gguf_model)
    patched = nodes["BladeNativeLoRA"]().patch(gguf_model, str(path), 0.7)[0]
    assert type(patched) is type(gguf_model)
    assert set(patched.patches) == expected and not gguf_model.patches  # the input model is untouched
    with_lora = _sample(comfy, patched)
    reference = nodes["BladeNativeLoRA"]().patch(dequantised_model, str(path), 0.7)[0]
    moved, moved_reference = with_lora - base, _sample(comfy, reference) - _sample(comfy, dequantised_model)
    assert moved.abs().max() > 1e-2  # the LoRA does something
    # the same fp32 weights and the same LoRA maths (core's calculate_weight), applied per call instead of once
    torch.testing.assert_close(moved, moved_reference, atol=1e-5, rtol=0)

    comfy.model_management.unload_all_models()
    comfy.model_management.load_models_gpu([patched], force_full_load=True)
    carried = {k for k, p in gguf_model.model.named_parameters() if getattr(p, "patches", None)}
    assert carried == expected  # ComfyUI-GGUF hangs the patches on the quantised weights
    patched.unpatch_model(device_to=torch.device("cpu"))
    assert not any(getattr(p, "patches", None) for p in gguf_model.model.parameters())
    torch.testing.assert_close(_sample(comfy, gguf_model), base, atol=0, rtol=0)
