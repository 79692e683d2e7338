"""Contract: asa_attention equals dense attention when every block is kept (any backend, reorder on/off, global
on/off, text tokens, CFG batches); otherwise it equals the explicit formula (softmax over the kept blocks plus
pooled tokens biased by ln(sample_gap)) with fold == merge, is finite, gives gradients, and records density."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from blade_ops.attention import ASAConfig, ASAStats, asa_attention
from blade_ops.attention.asa import pool_kv
from blade_ops.attention.backends.torch_backend import expand_block_mask
from blade_ops.attention.curve import token_order

GRID, TEXT = (3, 5, 7), 13  # 105 video tokens + 13 text tokens, block 16 -> 8 blocks, tail of 6


def _qkv(b=2, h=2, grid=GRID, text=TEXT, d=16, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1] * grid[2] + text
    return tuple(torch.randn(b, h, n, d, generator=g) * scale for _ in range(3))


def _all_kept(**kw):
    return ASAConfig(block_size=16, num_keep=4, tau=1.0, min_ratio=1.0, max_ratio=1.0, sample_gap=4, **kw)


@pytest.mark.parametrize("backend", ["torch", "flex"])
@pytest.mark.parametrize("reorder", [True, False])
@pytest.mark.parametrize("use_global", [True, False])
@pytest.mark.parametrize("text", [0, TEXT])
def test_all_blocks_kept_equals_dense(backend, reorder, use_global, text):
    q, k, v = _qkv(text=text)
    cfg = _all_kept(reorder=reorder, use_global=use_global)
    out = asa_attention(q, k, v, grid=GRID, num_text_tokens=text, config=cfg, backend=backend)
    ref = F.scaled_dot_product_attention(q, k, v)
    assert (out - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("backend", ["torch", "flex"])
def test_a_video_of_one_key_block_is_dense(backend):
    """With a single key block the rule keeps everything whatever its ratios, so nothing lies outside the selection
    and the global branch must not add its pooled tokens: the output is dense attention."""
    grid = (1, 3, 4)  # 12 tokens < one 16-token block
    q, k, v = _qkv(grid=grid, text=0, seed=2)
    cfg = ASAConfig(block_size=16, num_keep=4, tau=0.5, min_ratio=0.2, max_ratio=0.3, sample_gap=4)
    out = asa_attention(q, k, v, grid=grid, num_text_tokens=0, config=cfg, backend=backend)
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() <= 1e-5


def test_text_first_layout_equals_dense():
    q, k, v = _qkv()
    n = q.shape[2] - TEXT

    def text_first(x):
        return torch.cat([x[:, :, n:], x[:, :, :n]], dim=2)

    out = asa_attention(
        text_first(q), text_first(k), text_first(v), grid=GRID, num_text_tokens=TEXT, config=_all_kept(),
        backend="torch", text_first=True,
    )
    ref = F.scaled_dot_product_attention(text_first(q), text_first(k), text_first(v))
    assert (out - ref).abs().max() <= 1e-5


def _explicit(q, k, v, sel_dense, cfg, grid, text):
    """Reference formula in curve order: kept tokens plus pooled tokens with weight sample_gap, float64; with
    ``global_skips_kept``, a row leaves out the pooled tokens whose segment's middle token lies in a block it keeps."""
    perm, inverse = token_order(grid, text, "cpu")
    qc, kc, vc = (x[:, :, perm].double() for x in (q, k, v))
    n_video = grid[0] * grid[1] * grid[2]
    length = q.shape[2]
    s = qc @ kc.transpose(-1, -2) / math.sqrt(q.shape[-1])
    w = torch.exp(s) * expand_block_mask(sel_dense, cfg.block_size, length, length)
    num, den = w @ vc, w.sum(-1, keepdim=True)
    if cfg.use_global:
        kp, vp = pool_kv(kc, n_video, cfg.sample_gap), pool_kv(vc, n_video, cfg.sample_gap)
        wp = cfg.sample_gap * torch.exp(qc @ kp.transpose(-1, -2) / math.sqrt(q.shape[-1]))
        if cfg.global_skips_kept:
            for j in range(kp.shape[2]):
                segment = list(range(j * cfg.sample_gap, min((j + 1) * cfg.sample_gap, n_video)))
                block = segment[len(segment) // 2 - (1 - len(segment) % 2)] // cfg.block_size
                kept_rows = expand_block_mask(sel_dense[..., block : block + 1], cfg.block_size, length, 1)[..., 0]
                wp[..., j] = wp[..., j].masked_fill(kept_rows, 0.0)
        num, den = num + wp @ vp, den + wp.sum(-1, keepdim=True)
    return (num / den)[:, :, inverse]


@pytest.mark.parametrize("backend", ["torch", "flex"])
@pytest.mark.parametrize("mode", ["fold", "merge"])
@pytest.mark.parametrize("text", [0, TEXT])
def test_sparse_matches_explicit_formula(backend, mode, text):
    q, k, v = _qkv(text=text, seed=3, scale=1.5)
    cfg = ASAConfig(block_size=16, num_keep=4, tau=0.6, min_ratio=0.2, max_ratio=0.5, sample_gap=4, global_mode=mode)
    plans = []
    out = asa_attention(q, k, v, grid=GRID, num_text_tokens=text, config=cfg, backend=backend, plan_out=plans)
    sel = plans[0].selection
    assert plans[0].global_mode == mode
    assert 0.0 < float(sel.density()) < 1.0
    ref = _explicit(q, k, v, sel.dense, cfg, GRID, text)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_fold_equals_merge_and_global_matters():
    q, k, v = _qkv(seed=5)
    base = dict(block_size=16, num_keep=4, tau=0.7, min_ratio=0.2, max_ratio=0.4, sample_gap=5)
    outs = {
        m: asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=ASAConfig(**base, global_mode=m),
                         backend="torch")
        for m in ("fold", "merge")
    }
    assert (outs["fold"] - outs["merge"]).abs().max() <= 1e-5
    no_global = asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=ASAConfig(**base, use_global=False),
                              backend="torch")
    assert (no_global - outs["fold"]).abs().max() > 1e-3


def test_large_logits_stay_finite():
    q, k, v = _qkv(scale=40.0, seed=7)
    cfg = ASAConfig(block_size=16, num_keep=4, min_ratio=0.1, max_ratio=0.3, sample_gap=4)
    for backend in ("torch", "flex"):
        out = asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=cfg, backend=backend)
        assert torch.isfinite(out).all()


def test_gradients_flow_and_match_dense_when_all_kept():
    q, k, v = (x.requires_grad_() for x in _qkv(b=1))
    out = asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=_all_kept(), backend="torch")
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), g)
    for a, b in zip(grads, ref, strict=True):
        assert (a - b).abs().max() <= 1e-5
    sparse_cfg = ASAConfig(block_size=16, num_keep=4, min_ratio=0.2, max_ratio=0.4, sample_gap=4)
    out = asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=sparse_cfg, backend="torch")
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert all(torch.isfinite(x).all() and x.abs().sum() > 0 for x in grads)


@pytest.mark.parametrize("text", [0, TEXT])
def test_each_sample_is_independent_of_its_batch_position(text):
    """A video's mask and output must not depend on where it sits in the batch: with CFG the conditional half sits
    after the unconditional one, and a second prompt moves it again, so otherwise adding a prompt changes the
    first video."""
    q, k, v = _qkv(b=3, text=text, seed=4, scale=1.5)
    cfg = ASAConfig(block_size=16, num_keep=4, tau=0.5, min_ratio=0.2, max_ratio=0.3, sample_gap=4)
    together = asa_attention(q, k, v, grid=GRID, num_text_tokens=text, config=cfg, backend="torch")
    for i in range(3):
        alone = asa_attention(
            q[i : i + 1], k[i : i + 1], v[i : i + 1], grid=GRID, num_text_tokens=text, config=cfg, backend="torch"
        )
        assert (alone - together[i : i + 1]).abs().max() <= 1e-5


def test_stats_record_density():
    q, k, v = _qkv()
    stats = ASAStats()
    cfg = ASAConfig(block_size=16, num_keep=4, min_ratio=0.25, max_ratio=0.25, use_global=False)
    asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=cfg, backend="torch", stats=stats)
    asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=_all_kept(), backend="torch", stats=stats)
    assert stats.calls == 2
    assert float(stats.last) == 1.0
    # 8 blocks, text in blocks 6-7: video rows keep 2 (ceil 0.25*8) + 2 text columns = 4, text rows all 8
    first = (6 * 4 + 2 * 8) / 64
    assert stats.mean_density == pytest.approx((first + 1.0) / 2)
    stats.reset()
    assert math.isnan(stats.mean_density)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"grid": (2, 2, 2), "num_text_tokens": TEXT}, "T\\*H\\*W"),
        ({"grid": (3, 5), "num_text_tokens": TEXT}, "three positive integers"),
    ],
)
def test_input_validation(kwargs, text):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=text):
        asa_attention(q, k, v, config=_all_kept(), backend="torch", **kwargs)


def test_fold_needs_a_bias_capable_backend(monkeypatch):
    from blade_ops.attention import backends

    fake = backends.AttentionBackend("nobias", backends.BACKENDS["torch"].fn, True, "", ("cpu",), False, True)
    monkeypatch.setitem(backends.BACKENDS, "nobias", fake)
    q, k, v = _qkv()
    cfg = ASAConfig(block_size=16, num_keep=4, min_ratio=0.2, max_ratio=0.4, sample_gap=4, global_mode="fold")
    with pytest.raises(ValueError, match="global_mode='fold'"):
        asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=cfg, backend="nobias")
    plans = []
    cfg_auto = ASAConfig.from_dict({**cfg.to_dict(), "global_mode": "auto"})
    asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=cfg_auto, backend="nobias", plan_out=plans)
    assert plans[0].global_mode == "merge"


@pytest.mark.gpu
def test_cuda_flex_matches_torch_backend():
    q, k, v = (x.cuda() for x in _qkv(b=2, h=2, grid=(5, 10, 13), text=40, d=64, seed=9))
    cfg = ASAConfig(block_size=128, num_keep=16, min_ratio=0.2, max_ratio=0.5, sample_gap=15)
    ref = asa_attention(q, k, v, grid=(5, 10, 13), num_text_tokens=40, config=cfg, backend="torch")
    out = asa_attention(q, k, v, grid=(5, 10, 13), num_text_tokens=40, config=cfg, backend="flex")
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("reorder", [True, False])
def test_fold_and_merge_gradients_agree(reorder):
    """The folded key/value layout (permute + gap + pooled rows in one buffer) has its own backward."""
    base = dict(block_size=16, num_keep=4, tau=0.7, min_ratio=0.2, max_ratio=0.4, sample_gap=4, reorder=reorder)
    q, k, v = (x.requires_grad_() for x in _qkv(b=2, seed=11))
    g = torch.randn_like(q)
    grads = {}
    for mode in ("fold", "merge"):
        out = asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=ASAConfig(**base, global_mode=mode),
                            backend="torch")
        grads[mode] = torch.autograd.grad(out, (q, k, v), g)
    for a, b in zip(grads["fold"], grads["merge"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "flex"])
@pytest.mark.parametrize("text", [0, TEXT])
def test_global_branch_without_kept_blocks_matches_explicit_formula(backend, text):
    q, k, v = _qkv(text=text, seed=3, scale=1.5)
    cfg = ASAConfig(block_size=16, num_keep=4, tau=0.6, min_ratio=0.2, max_ratio=0.5, sample_gap=5,
                    global_skips_kept=True)
    plans = []
    out = asa_attention(q, k, v, grid=GRID, num_text_tokens=text, config=cfg, backend=backend, plan_out=plans)
    assert plans[0].global_mode == "merge"  # "auto" picks the mode that can leave tokens out per row
    sel = plans[0].selection
    assert 0.0 < float(sel.density()) < 1.0
    ref = _explicit(q, k, v, sel.dense, cfg, GRID, text)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    reference_cfg = ASAConfig(**{**cfg.to_dict(), "global_skips_kept": False})
    reference_branch = asa_attention(q, k, v, grid=GRID, num_text_tokens=text, config=reference_cfg, backend=backend)
    assert (reference_branch - out).abs().max() > 1e-3  # the option changes the output


def test_global_branch_without_kept_blocks_is_dense_when_a_row_keeps_everything():
    """tau=1 keeps every block although the lower clamp alone would not: the branch is on, but every pooled token
    lies in a kept block, so each row leaves them all out and the output is dense attention, not NaN."""
    q, k, v = _qkv(text=TEXT, seed=6)
    cfg = ASAConfig(block_size=16, num_keep=4, tau=1.0, min_ratio=0.2, max_ratio=1.0, sample_gap=4,
                    global_skips_kept=True)
    plans = []
    out = asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=cfg, backend="torch", plan_out=plans)
    assert plans[0].global_mode == "merge" and float(plans[0].selection.density()) == 1.0
    assert torch.isfinite(out).all()
    assert (out - F.scaled_dot_product_attention(q, k, v)).abs().max() <= 1e-5
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out = asa_attention(q, k, v, grid=GRID, num_text_tokens=TEXT, config=cfg, backend="torch")
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert all(torch.isfinite(x).all() for x in grads)


def test_global_skips_kept_is_refused_with_fold_and_when_not_a_bool():
    with pytest.raises(ValueError, match="only the 'merge' global mode"):
        ASAConfig(global_skips_kept=True, global_mode="fold")
    with pytest.raises(ValueError, match="must be True or False"):
        ASAConfig(global_skips_kept=1)
    assert ASAConfig.from_dict(ASAConfig(global_skips_kept=True).to_dict()).global_skips_kept is True
