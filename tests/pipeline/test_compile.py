"""Contract: compile_transformer compiles each block of a tiny Wan / CogVideoX transformer in place and the compiled
model gives the eager output (float32, max abs diff <= 1e-5): dense, with ASA installed after compiling (all blocks
kept, then a sparse config), with ASA and a peft LoRA installed before compiling, after a LoRA strength change; ASA's
step index and layer index are read at call time without recompiling per step or per layer; compiling twice is a
no-op."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.utils import counters

from blade_ops.attention import get_asa_handle, install_asa
from blade_ops.lora import apply_lora, set_lora_strength
from blade_ops.models.tiny import tiny_transformer
from blade_ops.pipeline.compile import compile_transformer, is_compiled
from tests.common import ALL_KEPT, attention_lora
from tests.common import SPARSE as SPARSE_BASE

# first step dense, then at most 1 of 2 (Wan) / 3 (CogVideoX) key blocks per row plus the global branch
SPARSE = replace(SPARSE_BASE, dense_steps=1)
FRAMES, HEIGHT, WIDTH = 2, 8, 8  # latent size -> a (2, 4, 4) token grid: the smallest shapes keep compiling short
TOL = 1e-5


def _inputs(family: str) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([500])
    text = torch.randn(1, 7, 32, generator=g)
    if family == "wan":
        return (torch.randn(1, 16, FRAMES, HEIGHT, WIDTH, generator=g), t, text), {}
    x = torch.randn(1, FRAMES, 16, HEIGHT, WIDTH, generator=g)
    angles = torch.rand(FRAMES * (HEIGHT // 2) * (WIDTH // 2), 8, generator=g) * 6.28
    rotary = (angles.cos().repeat_interleave(2, dim=-1), angles.sin().repeat_interleave(2, dim=-1))
    return (x, text, t), {"image_rotary_emb": rotary}


@torch.no_grad()
def _outputs(eager: torch.nn.Module, compiled: torch.nn.Module, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    args, kwargs = _inputs(family)
    return eager(*args, **kwargs, return_dict=False)[0], compiled(*args, **kwargs, return_dict=False)[0]


def _diff(eager: torch.nn.Module, compiled: torch.nn.Module, family: str) -> float:
    ref, out = _outputs(eager, compiled, family)
    return (out - ref).abs().max().item()


def _pair(family: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    eager = tiny_transformer(family)
    return eager, copy.deepcopy(eager)


def _set_step(models, step: int) -> None:
    for model in models:
        get_asa_handle(model).set_step(step)


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_errors():
    model = tiny_transformer("wan")
    with pytest.raises(ValueError, match="Expected one of WanTransformer3DModel"):
        compile_transformer(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Expected one of WanTransformer3DModel"):
        is_compiled(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="mode='fast' is not a torch.compile mode; valid: default"):
        compile_transformer(model, mode="fast")
    with pytest.raises(ValueError, match="dynamic='yes' must be True, False or None"):
        compile_transformer(model, dynamic="yes")
    assert not is_compiled(model)


@pytest.mark.slow  # ~15 s on two CPU cores with a cold inductor cache
def test_wan_dense_then_asa_installed_after_compiling():
    """ASA processors swapped in after compiling are picked up (the blocks recompile), not silently skipped."""
    family = "wan"
    eager, compiled = _pair(family)
    compile_transformer(compiled)
    calls = [block._compiled_call_impl for block in compiled.blocks]
    compile_transformer(compiled)  # same options: nothing changes
    assert is_compiled(compiled) and not is_compiled(eager)
    assert [block._compiled_call_impl for block in compiled.blocks] == calls
    assert _diff(eager, compiled, family) <= TOL

    for model in (eager, compiled):
        install_asa(model, ALL_KEPT, backend="torch")
    assert _diff(eager, compiled, family) <= TOL
    assert get_asa_handle(compiled).layer_density() == {0: 1.0, 1: 1.0}

    for model in (eager, compiled):
        install_asa(model, SPARSE, backend="torch")
    for step in range(3):  # step 0 dense (dense_steps=1), then sparse
        _set_step((eager, compiled), step)
        before = _graphs()
        assert _diff(eager, compiled, family) <= TOL
        if step == 2:  # the step index is read at call time, never compiled into the blocks
            assert _graphs() == before
    density = get_asa_handle(compiled).layer_density()
    assert density == get_asa_handle(eager).layer_density() and max(density.values()) < 1.0


@pytest.mark.slow  # ~20 s on two CPU cores with a cold inductor cache
def test_cogvideox_asa_and_lora_before_compiling(tmp_path):
    """The documented order (ASA, LoRA, compile); a strength change recompiles and is applied."""
    family = "cogvideox"
    torch._dynamo.reset()  # the processor's compiled entries counted below are this test's only
    eager, compiled = _pair(family)
    path = attention_lora(eager, tmp_path)
    for model in (eager, compiled):
        install_asa(model, SPARSE, backend="torch")
        get_asa_handle(model).set_step(1)
        apply_lora(model, path, adapter_name="blade")
    compile_transformer(compiled)
    assert is_compiled(compiled)
    ref, out = _outputs(eager, compiled, family)
    # the processors read their layer index outside the traced code: one compiled processor for every layer
    processor = type(compiled.transformer_blocks[0].attn1.processor)
    assert len(_debug_get_cache_entry_list(processor.__call__.__code__)) == 1
    assert (out - ref).abs().max() <= TOL
    assert max(get_asa_handle(compiled).layer_density().values()) < 1.0
    for model in (eager, compiled):
        set_lora_strength(model, "blade", 0.5)
    ref_half, out_half = _outputs(eager, compiled, family)
    assert (out_half - ref_half).abs().max() <= TOL
    assert (out_half - out).abs().max() > 1e-3  # the new strength is applied, not the compiled-in one
