"""Contract: compiled sampling through the nodes gives the eager result, and running the same graph again compiles
nothing (torch._dynamo's ``unique_graphs`` counter stays put).

- The pack's path: BLADE Sampler's ``compile`` on a tiny Wan with ASA + LoRA (fp32, max abs diff <= 1e-5 against
  the eager run); a second run compiles nothing; a baseline branch on the same loaded model sees no patch; going
  back to the first branch compiles nothing again; ``compile`` off runs eagerly again.
- The native path: core's TorchCompileModel on a core Wan MODEL patched by BLADE ASA (ComfyUI model) and BLADE
  LoRA (ComfyUI model), in both orders (compile last, and compile first with ASA after it), sampled by core with
  BLADE's schedule (fp32, <= 1e-4 against eager: whole-model inductor fuses differently); ASA stays sparse.

Both compile with inductor on the CPU (15-25 s each on two cores with an empty inductor cache). The pack's test
needs no ComfyUI and runs in the default suite; the native one runs with $COMFYUI_PATH.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parent))

import core_wan as cw  # noqa: E402
from blade_tiny_files import LORA_NAMES, TINY_NAMES  # noqa: E402

from tests.common import attention_lora  # noqa: E402

pytestmark = pytest.mark.comfyui

LATENT = (1, 16, 3, 32, 32)  # grid 3 x 16 x 16 = 768 tokens = 6 ASA blocks of 128
ASA = dict(backend="torch", tau=0.95, min_ratio=0.05, max_ratio=0.17, num_keep=32, use_global=True, sample_gap=30,
           dense_steps=1, dense_blocks="", start_percent=0.0, end_percent=1.0)


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _counted(run):
    """(result of ``run()``, dynamo graphs it compiled)."""
    before = _graphs()
    out = run()
    return out, _graphs() - before


# ---- the pack's nodes ------------------------------------------------------------------------------------------


def test_pack_sampler_compiles_once_per_graph(pack, models_dir):
    from blade_pack.blade_ops.pipeline.compile import is_compiled
    from blade_pack.nodes.patching import unpatch

    nodes = pack.NODE_CLASS_MAPPINGS
    folder = str(models_dir / "diffusers" / TINY_NAMES["wan"])
    (wan,) = nodes["BladeModelLoader"]().load(folder, "auto", "fp32")
    (te,) = nodes["BladeTextEncoderLoader"]().load(folder, "wan", "fp32")
    (embeds,) = nodes["BladeTextEncode"]().encode(te, "a red ball bouncing", "")
    (sparse,) = nodes["BladeASA"]().patch(wan, "family defaults", "torch", 0.95, 0.05, 0.17, 32, True, 30, 0, "")
    (model,) = nodes["BladeLoraLoader"]().patch(sparse, str(models_dir / "loras" / LORA_NAMES["wan"]), 1.0)
    transformer = wan.bundle.transformer

    def sample(m, compile):
        out = nodes["BladeSampler"]().sample(m, embeds, 1, 3, 1.0, "blade", 64, 64, 5, False, None, compile=compile)
        return out[0]["samples"]

    try:
        eager = sample(model, False)
        first, compiled = _counted(lambda: sample(model, True))
        assert is_compiled(transformer) and compiled > 0
        second, again = _counted(lambda: sample(model, True))
        assert again == 0
        torch.testing.assert_close(first, eager, atol=1e-5, rtol=0)
        torch.testing.assert_close(second, first, atol=1e-6, rtol=0)

        plain_eager = sample(wan, False)
        plain = sample(wan, True)  # a baseline branch on the same loaded model: no ASA, no LoRA
        torch.testing.assert_close(plain, plain_eager, atol=1e-5, rtol=0)
        back, recompiled = _counted(lambda: sample(model, True))
        assert recompiled == 0  # dynamo keeps both branches' graphs
        torch.testing.assert_close(back, first, atol=1e-6, rtol=0)

        off = sample(model, False)
        assert not is_compiled(transformer)
        torch.testing.assert_close(off, eager, atol=0, rtol=0)
    finally:
        unpatch(transformer)


# ---- core's model, core's TorchCompileModel ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def comfy():
    return cw.import_comfy()


@pytest.fixture(scope="module")
def core_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("core_wan_compile")
    model = cw.tiny_diffusers_wan()
    return cw.save_core_file(model, root / "tiny_wan_t2v.safetensors"), attention_lora(model, root, alpha=1.0)


def _sample_blade(comfy, nodes, model, steps=4, seed=0):
    sigmas = nodes["BladeSchedule"]().sigmas(steps, 3.0)[0]
    noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))
    positive = cw.conditioning()
    negative = [[torch.zeros_like(positive[0][0]), {}]]
    sampler = nodes["BladeUniPCSampler"]().sampler()[0]
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, positive, negative,
                                          torch.zeros(LATENT), disable_pbar=True, seed=seed)


def _torch_compile(model):
    """Core's TorchCompileModel node (inductor), as the graph runs it."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    out = TorchCompileModel.execute(model, "inductor")
    return out.result[0] if hasattr(out, "result") else out[0]


@pytest.mark.parametrize("order", ["compile last", "compile first"])
def test_core_torch_compile_composes_with_native_asa(comfy, pack, core_files, order):
    nodes = pack.NODE_CLASS_MAPPINGS
    path, lora = core_files
    core = cw.load_core(comfy, path)

    def blade(model):
        model = nodes["BladeNativeASA"]().patch(model, "custom (values below)", **ASA)[0]
        return nodes["BladeNativeLoRA"]().patch(model, str(lora), 1.0)[0]

    patched = blade(core)
    eager = _sample_blade(comfy, nodes, patched)
    compiled = _torch_compile(patched) if order == "compile last" else blade(_torch_compile(core))
    first, graphs = _counted(lambda: _sample_blade(comfy, nodes, compiled))
    assert graphs > 0  # it did compile
    second, again = _counted(lambda: _sample_blade(comfy, nodes, compiled))
    assert again == 0
    torch.testing.assert_close(first, eager, atol=1e-4, rtol=0)
    torch.testing.assert_close(second, first, atol=1e-6, rtol=0)
    state = compiled.model_options["transformer_options"]["optimized_attention_override"].blade_asa_state
    report = state.last_report
    assert report.sparse_calls > 0 and report.mean_density < 0.5  # sparse for real under compile
    assert report.dense_calls["within dense_steps"] > 0
