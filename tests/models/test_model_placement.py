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
