"""Contract: ComfyUI's Cancel (comfy.model_management's interrupt, stubbed here) stops BLADE VAE Decode between
decoder calls and the loaders between files (and between groups of tensors of one file); the cancelled node returns
nothing, and the same VAE / the next load give exactly what an uncancelled run gives."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from blade_tiny_files import TINY_NAMES


@pytest.fixture
def cancel(monkeypatch):
    """comfy.model_management stand-in whose interrupt check raises from the (after + 1)-th call on."""
    state = types.SimpleNamespace(after=None, checks=0)

    class InterruptProcessingException(Exception):
        pass

    def throw_exception_if_processing_interrupted():
        state.checks += 1
        if state.after is not None and state.checks > state.after:
            raise InterruptProcessingException()

    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.unload_all_models = mm.soft_empty_cache = lambda *a, **k: None
    mm.get_torch_device = lambda: torch.device("cpu")
    comfy = types.ModuleType("comfy")
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    state.Interrupt = InterruptProcessingException

    def arm(after):
        state.checks, state.after = 0, after

    state.arm = arm
    return state


def _count_calls(module: torch.nn.Module) -> list:
    """Completed forward calls of ``module``."""
    calls: list = []
    module.register_forward_hook(lambda m, args, out: calls.append(1))
    return calls


@pytest.mark.parametrize("tiled", [False, True], ids=["chunked", "tiled"])
def test_cancel_stops_vae_decode_between_decoder_calls(nodes, models_dir, cancel, tiled):
    (vae,) = nodes["BladeVAELoader"]().load(str(models_dir / "diffusers" / TINY_NAMES["wan"]), "auto", "fp32")
    latent = {"samples": torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))}
    decode = nodes["BladeVAEDecode"]().decode
    calls = _count_calls(vae.vae.decoder)
    cancel.arm(None)
    (reference,) = decode(vae, latent, tiled)
    full_calls = len(calls)
    assert full_calls >= 2  # the first latent frame alone, then the rest (chunked) or one call per frame (tiled)

    calls.clear()
    cancel.arm(2)  # the node's own check before decoding, the check before the first decoder call, then Cancel
    with pytest.raises(cancel.Interrupt):
        decode(vae, latent, tiled)
    assert len(calls) == 1 < full_calls
    assert not vae.vae.use_tiling and not vae.vae.use_slicing  # the VAE's own settings are back

    cancel.arm(None)
    (again,) = decode(vae, latent, tiled)
    assert torch.equal(again, reference)  # no decoder cache or setting of the cancelled run is left behind


def test_cancel_stops_the_text_encoder_loader_between_files(nodes, models_dir, cancel, pack, monkeypatch):
    loader = nodes["BladeTextEncoderLoader"]()
    folder = str(models_dir / "diffusers" / TINY_NAMES["wan"])
    tokenizers = []
    import transformers

    real = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: tokenizers.append(a) or real(*a, **k))
    cancel.arm(1)  # the check before the encoder's weights passes; Cancel before the tokenizer files are read
    with pytest.raises(cancel.Interrupt):
        loader.load(folder, "wan", "fp32")
    assert cancel.checks == 2 and not tokenizers
    cancel.arm(None)
    (bundle,) = loader.load(folder, "wan", "fp32")
    assert bundle.text_encoder is not None and bundle.tokenizer is not None and len(tokenizers) == 1


def test_cancel_stops_a_single_file_load_between_tensor_groups(nodes, cancel, pack, tmp_path, monkeypatch):
    from blade_pack.blade_ops.models import keymaps
    from blade_pack.blade_ops.models.tiny import tiny_vae
    from safetensors.torch import save_file

    loading = sys.modules["blade_pack.blade_ops.models.loading"]
    source = tiny_vae("wan", seed=5)
    tensors = keymaps.wan_vae_to_original(source.state_dict(), source.config.num_res_blocks)
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    monkeypatch.setattr(loading, "READ_GROUP_BYTES", 8 * 1024)  # several groups of this 55 KB file
    read: list[str] = []
    real = loading.load_tensors
    monkeypatch.setattr(loading, "load_tensors", lambda p, keys=None: read.extend(keys or []) or real(p, keys))

    cancel.arm(None)
    (full,) = nodes["BladeVAELoader"]().load(str(path), "auto", "fp32")
    groups = cancel.checks - 1  # one check before the file, one before each group of tensors
    assert groups >= 3 and len(read) == len(tensors)

    read.clear()
    cancel.arm(2)  # before the file, the first group, then Cancel
    with pytest.raises(cancel.Interrupt):
        nodes["BladeVAELoader"]().load(str(path), "auto", "fp32")
    assert 0 < len(read) < len(tensors)

    cancel.arm(None)
    (again,) = nodes["BladeVAELoader"]().load(str(path), "auto", "fp32")
    expected = full.vae.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in again.vae.state_dict().items())
