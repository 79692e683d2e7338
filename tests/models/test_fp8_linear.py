"""fp8 (e4m3) linear layers (blade_ops.models.fp8_linear): one Fp8Linear against its float32 reference and the
original layer, a whole tiny Wan pass within a stated error and bit-identical after restoring, the order with ASA
and a peft LoRA, the family's layer lists, and the error where fp8 matmuls cannot run.

The real ``torch._scaled_mm`` path runs here: torch's CPU build computes e4m3 products with row-wise scales (slowly),
so these tests use it with ``allow_cpu=True``; selecting fp8 for a CPU run is otherwise refused.

Tolerances: e4m3 rounds each element with a relative error of at most 2^-4; with per-token and per-channel scales
a layer's output error is about 3.5% of its norm on Gaussian data, so one layer must stay within 0.05 of the float32
layer. The ``_scaled_mm`` output is rounded to bf16 (2^-8 relative) on top of the reference's float32 products, so
the two agree within 0.01. A whole transformer pass must stay within 0.05 of the original.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel
from torch import nn

from blade_ops.attention import install_asa, remove_asa
from blade_ops.families import FAMILIES, WAN
from blade_ops.lora import apply_lora, lora_from_state_dict, remove_lora
from blade_ops.models.fp8_linear import (
    Fp8Linear,
    check_fp8_device,
    fp8_linear_reference,
    install_fp8_linears,
    installed_fp8_linears,
    restore_fp8_linears,
)
from blade_ops.prepare import prepare_transformer
from tests.common import ALL_KEPT

LAYER_TOLERANCE = 0.05
PASS_TOLERANCE = 0.05


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    err = float((a.float() - b.float()).norm() / b.float().norm())
    assert err == err, "relative error is NaN"
    return err


def wan16(seed: int = 0) -> nn.Module:
    """The tiny Wan at head_dim 16 (width 32): every block linear has features that are multiples of 16."""
    torch.manual_seed(seed)
    return WanTransformer3DModel(**{**WAN.tiny_transformer_config(), "attention_head_dim": 16}).eval()


def wan_inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(1, 16, 3, 8, 8, generator=g), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 8, 32, generator=g), return_dict=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_layer_matches_reference_and_original(dtype, bias):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=bias)
    x = torch.randn(2, 7, 64)
    layer = Fp8Linear(linear)
    with torch.no_grad():
        y = layer(x.to(dtype))
        ref = fp8_linear_reference(x.to(dtype), layer.weight_fp8.view(torch.float8_e4m3fn), layer.weight_scale,
                                   linear.bias)
        exact = linear(x)
    assert y.shape == (2, 7, 48) and y.dtype == dtype and torch.isfinite(y).all()
    assert rel(y, ref) <= 0.01
    assert 0 < rel(y, exact) <= LAYER_TOLERANCE


def test_zero_rows_and_unaligned_layers():
    layer = Fp8Linear(nn.Linear(32, 16))
    with torch.no_grad():
        y = layer(torch.zeros(3, 32))
    assert torch.allclose(y, layer.bias.detach().expand(3, -1).to(y.dtype), atol=1e-2)
    with pytest.raises(ValueError, match="multiples of 16"):
        Fp8Linear(nn.Linear(24, 32))


@torch.no_grad()
def test_whole_wan_pass_and_restore():
    transformer = wan16()
    before = {n: type(m) for n, m in transformer.named_modules()}
    dense = transformer(**wan_inputs())[0]
    handle = install_fp8_linears(transformer, allow_cpu=True)
    assert len(handle.names) == len(WAN.fp8_linears) * len(transformer.blocks) and not handle.kept
    # embeddings, the time / text MLPs and the output projection stay as they are
    assert type(transformer.proj_out) is nn.Linear and type(transformer.condition_embedder.time_proj) is nn.Linear
    fp8 = transformer(**wan_inputs())[0]
    assert torch.isfinite(fp8).all() and 0 < rel(fp8, dense) <= PASS_TOLERANCE
    assert restore_fp8_linears(transformer) and installed_fp8_linears(transformer) is None
    assert {n: type(m) for n, m in transformer.named_modules()} == before
    assert torch.equal(transformer(**wan_inputs())[0], dense)


def test_layers_that_cannot_run_fp8_are_kept_or_refused():
    cog = FAMILIES["cogvideox"].tiny_transformer()
    handle = install_fp8_linears(cog, allow_cpu=True)
    block = cog.transformer_blocks[0]
    assert isinstance(block.ff.net[2], Fp8Linear) and type(block.norm1.linear) is nn.Linear  # modulation kept
    with pytest.raises(ValueError, match="already runs fp8"):
        install_fp8_linears(cog, allow_cpu=True)
    handle.restore()
    with pytest.raises(ValueError, match=r"24 -> 24 features, not multiples of 16"):
        install_fp8_linears(WAN.tiny_transformer(), allow_cpu=True)  # width 24: nothing qualifies


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_lists_linear_layers_of_its_blocks(name):
    family = FAMILIES[name]
    transformer = family.tiny_transformer()
    block = getattr(transformer, family.block_list)[0]
    assert family.fp8_linears and all(type(block.get_submodule(p)) is nn.Linear for p in family.fp8_linears)


def _lora(transformer: nn.Module):
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear) and name.endswith((".to_q", ".to_v")):
            state[f"{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=g) * 0.3
            state[f"{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=g) * 0.3
    return lora_from_state_dict(state, {})


@torch.no_grad()
def test_after_asa_and_an_unmerged_lora():
    """ASA, then the peft LoRA, then fp8: the LoRA's base layers are quantised, its low-rank branch is not; LoRA
    changes are refused while fp8 is on; taking everything off in reverse gives the original outputs back."""
    transformer = wan16()
    plain = transformer(**wan_inputs())[0]
    lora = _lora(transformer)
    install_asa(transformer, ALL_KEPT, "torch")
    name = apply_lora(transformer, lora)
    with_lora = transformer(**wan_inputs())[0]
    assert rel(with_lora, plain) > 0.01  # the LoRA matters
    install_fp8_linears(transformer, allow_cpu=True)
    to_q = transformer.blocks[0].attn1.to_q
    assert isinstance(to_q.base_layer, Fp8Linear) and type(to_q.lora_A[name]) is nn.Linear
    fp8 = transformer(**wan_inputs())[0]
    assert torch.isfinite(fp8).all() and rel(fp8, with_lora) <= PASS_TOLERANCE
    with pytest.raises(RuntimeError, match="runs fp8 linear layers"):
        remove_lora(transformer, name)
    with pytest.raises(RuntimeError, match="runs fp8 linear layers"):
        apply_lora(transformer, lora, merge=True)
    restore_fp8_linears(transformer)
    assert torch.equal(transformer(**wan_inputs())[0], with_lora)
    remove_lora(transformer, name)
    remove_asa(transformer)
    assert torch.equal(transformer(**wan_inputs())[0], plain)


def test_selecting_fp8_without_fp8_tensor_cores_is_an_error():
    with pytest.raises(RuntimeError, match=r"compute capability 8\.9 or later.*the run is on cpu"):
        check_fp8_device("cpu")
    transformer = wan16()
    with pytest.raises(RuntimeError, match="fp8 tensor cores"):
        prepare_transformer(transformer, asa=None, loras=[(_lora(transformer), 1.0)], fp8_linears=True)
    # what was put on before the refusal is taken off again
    assert installed_fp8_linears(transformer) is None
    assert not any(hasattr(m, "base_layer") for m in transformer.modules())
