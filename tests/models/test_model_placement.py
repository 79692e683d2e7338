"""Contract: parts go to the execution device for their work and, under offload="model", back to the CPU after
(also when the work raises); bad devices and policies are clear errors."""

from __future__ import annotations

import pytest
import torch

from blade_ops.families import WAN
from blade_ops.models import ModelBundle, load_model_bundle, on_device, place
from blade_ops.models.placement import module_device, resolve_device


def test_place_and_on_device_on_cpu():
    lin = torch.nn.Linear(2, 2)
    assert place(lin, "cpu", dtype=torch.float16) is lin and lin.weight.dtype == torch.float16
    assert place(None, "cpu") is None
    with on_device(lin, "cpu", offload="model") as m:
        assert m is lin and module_device(m).type == "cpu"
    with on_device(None, "cpu") as m:
        assert m is None


def test_bad_device_and_policy():
    with pytest.raises(ValueError, match="Invalid device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="Unknown offload policy 'all'; valid policies: none, model"):
        with on_device(torch.nn.Linear(1, 1), "cpu", offload="all"):
            pass
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            place(torch.nn.Linear(1, 1), "cuda")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_bundle_using_checks_parts():
    bundle = ModelBundle(family=WAN, vae=torch.nn.Linear(1, 1), offload="model")
    with bundle.using("vae") as vae:
        assert vae is bundle.vae
    with pytest.raises(ValueError, match="missing transformer"):
        with bundle.using("transformer"):
            pass
    with pytest.raises(ValueError, match="Unknown model part 'unet'"):
        with bundle.using("unet"):
            pass


def test_offload_model_bundle_stays_on_cpu(tiny_folder):
    bundle = load_model_bundle(tiny_folder("wan"), parts=("vae",), device="cpu", offload="model", dtype="fp32")
    assert bundle.offload == "model" and bundle.device == "cpu"
    assert module_device(bundle.vae).type == "cpu"


@pytest.mark.gpu
def test_offload_moves_in_and_back_out_even_on_error():
    lin = torch.nn.Linear(4, 4)
    with on_device(lin, "cuda", offload="model") as m:
        assert module_device(m).type == "cuda"
    assert module_device(lin).type == "cpu"
    with pytest.raises(RuntimeError, match="boom"):
        with on_device(lin, "cuda", offload="model"):
            raise RuntimeError("boom")
    assert module_device(lin).type == "cpu"
    with on_device(lin, "cuda", offload="none"):
        pass
    assert module_device(lin).type == "cuda"


@pytest.mark.gpu
def test_bundle_loads_on_gpu_with_offload_none(tiny_folder):
    bundle = load_model_bundle(tiny_folder("wan"), device="cuda", offload="none", dtype="bf16")
    assert module_device(bundle.transformer).type == "cuda"
    assert module_device(bundle.text_encoder).type == "cuda"
    off = load_model_bundle(tiny_folder("wan"), device="cuda", offload="model", dtype="bf16")
    assert module_device(off.transformer).type == "cpu"
    with off.using("transformer") as t:
        assert module_device(t).type == "cuda"
    assert module_device(off.transformer).type == "cpu"


def test_streaming_finds_the_encoder_blocks():
    from blade_ops.models.placement import _block_lists
    from blade_ops.models.tiny import tiny_text_encoder

    encoder = tiny_text_encoder("wan", vocab_size=50)
    assert [id(b) for b in _block_lists(encoder)] == [id(encoder.encoder.block)]


@pytest.mark.gpu
def test_streamed_text_encoder_matches_whole_and_returns_to_cpu():
    """Streaming (offload="model", stream=True) gives the same embeddings as the encoder moved whole, each block
    visits the GPU only for its own forward, and everything is back on the CPU afterwards."""
    from blade_ops.models.tiny import tiny_text_encoder

    encoder = tiny_text_encoder("wan", vocab_size=50)
    ids = torch.randint(3, 50, (2, 16))
    with on_device(encoder, "cuda", offload="model") as whole:
        reference = whole(ids.cuda()).last_hidden_state.cpu()
    seen = []
    hook = encoder.encoder.block[1].register_forward_hook(
        lambda b, a, o: seen.append((module_device(encoder.encoder.block[0]).type, module_device(b).type))
    )
    with on_device(encoder, "cuda", offload="model", stream=True) as streamed:
        out = streamed(ids.cuda()).last_hidden_state.cpu()
    hook.remove()
    assert seen == [("cpu", "cuda")]  # block 0 already went back when block 1 ran
    assert torch.allclose(out, reference, atol=1e-6)
    assert {p.device.type for p in encoder.parameters()} == {"cpu"}
