"""Contract: install_asa swaps only self-attention processors of tiny Wan / CogVideoX transformers; with every
block kept the model output equals the stock processors (CFG batch, rotary, LoRA, gradient checkpointing,
torch.compile); remove_asa restores the exact original processors; the handle exposes step, density, backend."""

from __future__ import annotations

import pytest
import torch

from blade_ops.attention import ASAConfig, get_asa_handle, install_asa, remove_asa
from blade_ops.models.tiny import tiny_transformer
from tests.common import ALL_KEPT, SPARSE

FRAMES, HEIGHT, WIDTH = 3, 12, 20  # latent size -> grid (3, 6, 10), 180 video tokens


def _inputs(family: str, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([500, 300][:batch])
    text = torch.randn(batch, 7, 32, generator=g)
    if family == "wan":
        x = torch.randn(batch, 16, FRAMES, HEIGHT, WIDTH, generator=g)
        return (x, t, text), {}
    x = torch.randn(batch, FRAMES, 16, HEIGHT, WIDTH, generator=g)
    n = FRAMES * (HEIGHT // 2) * (WIDTH // 2)
    angles = torch.rand(n, 8, generator=g) * 6.28
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    return (x, text, t), {"image_rotary_emb": (cos, sin)}


def _run(model, family, batch=2, seed=0):
    args, kwargs = _inputs(family, batch, seed)
    return model(*args, **kwargs, return_dict=False)[0]


@pytest.fixture(params=["wan", "cogvideox"])
def family(request):
    return request.param


@pytest.fixture
def model(family):
    return tiny_transformer(family)


def _attn1s(model, family):
    blocks = model.blocks if family == "wan" else model.transformer_blocks
    return [b.attn1 for b in blocks]


@torch.no_grad()
def test_all_kept_equals_stock_and_remove_restores(model, family):
    ref = _run(model, family)
    originals = [a.processor for a in _attn1s(model, family)]
    cross = [b.attn2.processor for b in model.blocks] if family == "wan" else []
    handle = install_asa(model, ALL_KEPT, backend="torch")
    assert get_asa_handle(model) is handle and handle.backend == "torch" and handle.family.name == family
    assert all(a.processor is not o for a, o in zip(_attn1s(model, family), originals, strict=True))
    if family == "wan":  # cross-attention untouched
        assert all(b.attn2.processor is p for b, p in zip(model.blocks, cross, strict=True))
    out = _run(model, family)
    assert handle.grid == (3, 6, 10)
    assert (out - ref).abs().max() <= 1e-5
    assert handle.layer_density() == {0: 1.0, 1: 1.0}
    remove_asa(model)
    assert get_asa_handle(model) is None
    assert all(a.processor is o for a, o in zip(_attn1s(model, family), originals, strict=True))
    assert torch.equal(_run(model, family), ref)


@torch.no_grad()
def test_flex_backend_all_kept_equals_stock(model, family):
    ref = _run(model, family, batch=1)
    install_asa(model, ALL_KEPT, backend="flex")
    assert (_run(model, family, batch=1) - ref).abs().max() <= 1e-5


@torch.no_grad()
def test_sparse_changes_output_and_reports_density(model, family):
    ref = _run(model, family)
    handle = install_asa(model, SPARSE, backend="auto")
    assert handle.backend == "torch"  # CPU
    out = _run(model, family)
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() > 1e-4
    density = handle.layer_density()
    assert set(density) == {0, 1} and all(0.0 < d < 1.0 for d in density.values())
    assert handle.stats.calls == 2


@torch.no_grad()
def test_dense_steps_and_layers(model, family):
    ref = _run(model, family)
    handle = install_asa(model, ASAConfig.from_dict({**SPARSE.to_dict(), "dense_steps": 1}), backend="torch")
    handle.set_step(0)
    assert (_run(model, family) - ref).abs().max() <= 1e-5
    handle.set_step(1)
    assert (_run(model, family) - ref).abs().max() > 1e-4
    with pytest.raises(ValueError, match="step_index"):
        handle.set_step(-1)
    handle = install_asa(model, ASAConfig.from_dict({**SPARSE.to_dict(), "dense_layers": [0, 1]}), backend="torch")
    assert (_run(model, family) - ref).abs().max() <= 1e-5
    assert handle.layer_density() == {0: 1.0, 1: 1.0}
    with pytest.raises(ValueError, match="dense_layers"):
        install_asa(model, ASAConfig.from_dict({**SPARSE.to_dict(), "dense_layers": [5]}), backend="torch")


@torch.no_grad()
def test_lora_layers_apply(model, family):
    from peft import LoraConfig

    base = _run(model, family)
    model.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    with_lora = _run(model, family)
    assert (with_lora - base).abs().max() > 1e-4
    install_asa(model, ALL_KEPT, backend="torch")
    assert (_run(model, family) - with_lora).abs().max() <= 1e-5


def test_gradient_checkpointing_matches(family):
    torch.manual_seed(0)
    grads = []
    for checkpointing in (False, True):
        model = tiny_transformer(family).train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        install_asa(model, SPARSE, backend="torch")
        _run(model, family).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.slow  # dynamo tracing of the tiny model takes ~30 s on two CPU cores; the joint-attention family
@torch.no_grad()
def test_torch_compile():
    family = "cogvideox"
    model = tiny_transformer(family)
    ref = _run(model, family)
    install_asa(model, ALL_KEPT, backend="torch")
    compiled = torch.compile(model, backend="eager")
    assert (_run(compiled, family) - ref).abs().max() <= 1e-5
    handle = get_asa_handle(model)
    assert handle.grid == (3, 6, 10)


def test_install_errors(model):
    with pytest.raises(ValueError, match="Expected one of WanTransformer3DModel, CogVideoXTransformer3DModel"):
        install_asa(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Unknown attention backend"):
        install_asa(model, ALL_KEPT, backend="magic")
    from blade_ops.attention.backends import BACKENDS

    if not BACKENDS["block_sparse_attn"].available:
        with pytest.raises(RuntimeError, match="Block-Sparse-Attention"):
            install_asa(model, ALL_KEPT, backend="block_sparse_attn")
    assert get_asa_handle(model) is None
    handle = install_asa(model)  # family preset
    assert handle.config == ASAConfig.for_family(handle.family)
