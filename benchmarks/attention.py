"""Attention benchmark: dense SDPA (cuDNN, flash) vs ASA at the Wan2.1-1.3B and CogVideoX-5B shapes.

Run on a CUDA machine from the repository root::

    python benchmarks/attention.py --write-docs

Inputs carry spatio-temporal structure like a video DiT's: a smooth random field over (t, h, w) (white noise
blurred by a Gaussian of sigma 2 tokens in t and 3 in h and w, per channel standardised) plus 30% white noise,
C=32 channels, projected per head to q, k, v with random matrices; k's projection is q's plus 50% independent
noise, and q is scaled so that attention is peaked (``--sharpness``). CogVideoX's 226 text tokens are Gaussian.

Timings are ``triton.testing.do_bench`` medians. "ASA" includes everything: curve reorder of q/k/v, estimate,
rule, block-mask build, sparse kernel with the global branch folded in, inverse reorder.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blade_ops.attention._estimate_triton import fp8_supported, launch_config  # noqa: E402
from blade_ops.attention._permute import permute_and_fold, permute_tokens  # noqa: E402
from blade_ops.attention.asa import ASAStats, asa_attention, pool_kv  # noqa: E402
from blade_ops.attention.backends import get_backend  # noqa: E402
from blade_ops.attention.backends.flex import _mods, build_flex_block_mask, compile_limit_context  # noqa: E402
from blade_ops.attention.backends.flex import _options as flex_options  # noqa: E402
from blade_ops.attention.config import ASAConfig  # noqa: E402
from blade_ops.attention.curve import token_order  # noqa: E402
from blade_ops.attention.estimate import estimate_block_importance, sample_offsets  # noqa: E402

logger = logging.getLogger("bench.attention")

SHAPES = {
    # name: (batch, heads, grid, text tokens, head dim)
    "wan": (1, 12, (21, 30, 52), 0, 128),
    "cogvideox": (2, 48, (13, 30, 45), 226, 64),
}


def _gauss_kernel(sigma: float, device) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def smooth_field(channels: int, grid: tuple[int, int, int], device, generator: torch.Generator) -> torch.Tensor:
    """[channels, T, H, W] smooth random field, unit variance per channel."""
    t, h, w = grid
    x = torch.randn(channels, 1, t, h, w, device=device, generator=generator)
    for dim, sigma in ((2, 2.0), (3, 3.0), (4, 3.0)):
        k = _gauss_kernel(sigma, device)
        shape = [1, 1, 1, 1, 1]
        shape[dim] = k.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (4 - dim)] = pad[2 * (4 - dim) + 1] = k.numel() // 2
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(shape))
    x = x.squeeze(1)
    return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)


def structured_qkv(
    batch: int, heads: int, grid: tuple[int, int, int], num_text: int, head_dim: int, *, dtype=torch.bfloat16,
    device="cuda", seed: int = 0, channels: int = 32, sharpness: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, T*H*W + num_text, D] with video tokens in raster order, then text (see module docstring)."""
    g = torch.Generator(device=device).manual_seed(seed)
    outs = {"q": [], "k": [], "v": []}
    n = grid[0] * grid[1] * grid[2]
    for _ in range(batch):
        feats = smooth_field(channels, grid, device, g).reshape(channels, n).T  # [N, C]
        feats = feats + 0.3 * torch.randn(feats.shape, device=device, generator=g)
        a = torch.randn(heads, channels, head_dim, device=device, generator=g) / math.sqrt(channels)
        ak = a + 0.5 * torch.randn(a.shape, device=device, generator=g) / math.sqrt(channels)
        av = torch.randn(a.shape, device=device, generator=g) / math.sqrt(channels)
        q = torch.einsum("nc,hcd->hnd", feats, a) * sharpness
        k = torch.einsum("nc,hcd->hnd", feats, ak)
        v = torch.einsum("nc,hcd->hnd", feats, av)
        if num_text:
            q = torch.cat([q, torch.randn(heads, num_text, head_dim, device=device, generator=g)], 1)
            k = torch.cat([k, torch.randn(heads, num_text, head_dim, device=device, generator=g)], 1)
            v = torch.cat([v, torch.randn(heads, num_text, head_dim, device=device, generator=g)], 1)
        outs["q"].append(q)
        outs["k"].append(k)
        outs["v"].append(v)
    return tuple(torch.stack(outs[n_]).to(dtype).contiguous() for n_ in "qkv")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def _bench(fn, warmup: int = 25, rep: int = 100) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def _sdpa_backends():
    from torch.nn.attention import SDPBackend

    return {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def check_correctness(results: dict) -> None:
    """Kernels vs the PyTorch references on the GPU (fresh random inputs, float32 where possible)."""
    dev = "cuda"
    torch.manual_seed(1)
    checks = results.setdefault("checks", {})
    # 1. fused estimate vs reference, at both head dims, L not a multiple of 128, S = 16 and 32
    for d, length, s in ((128, 32760, 32), (64, 17776, 32), (128, 5000, 16), (64, 5000, 16)):
        q = torch.randn(1, 2, length, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, 2, length, d, device=dev, dtype=torch.bfloat16)
        off = sample_offsets(1, 2, s, 128, dev)
        ref = estimate_block_importance(q, k, off, 128, impl="torch")
        out = estimate_block_importance(q, k, off, 128, impl="triton", precision="bf16")
        err = float((out - ref).abs().max() / ref.abs().max())
        checks[f"estimate_d{d}_L{length}_S{s}_max_rel_err"] = err
        if not torch.isfinite(out).all() or err > 1e-2:
            raise RuntimeError(f"fused estimate disagrees with the reference: {err}")
        if fp8_supported(q.device):  # the fp8 kernel vs the reference on the same e4m3 tokens
            ref8 = estimate_block_importance(q, k, off, 128, impl="torch", precision="fp8")
            out8 = estimate_block_importance(q, k, off, 128, impl="triton", precision="fp8")
            err8 = float((out8 - ref8).abs().max() / ref8.abs().max())
            checks[f"estimate_fp8_d{d}_L{length}_S{s}_max_rel_err"] = err8
    # 1b. fused rule vs the PyTorch rule
    from blade_ops.attention.backends import KVBias
    from blade_ops.attention.mask import select_blocks

    p = torch.softmax(torch.randn(2, 12, 256, 256, device=dev) * 3, dim=-1)
    ref = select_blocks(p, 0.95, 13, 44, impl="torch")
    out = select_blocks(p, 0.95, 13, 44, impl="triton")
    checks["rule_rows_differing_frac_err"] = float((out.counts != ref.counts).float().mean())
    p = torch.softmax(torch.randn(2, 12, 139, 139, device=dev) * 3, dim=-1)
    ref = select_blocks(p, 0.95, 7, 14, first_text_block=137, impl="torch")
    out = select_blocks(p, 0.95, 7, 14, first_text_block=137, impl="triton")
    checks["rule_text_mask_differing_frac_err"] = float((out.dense != ref.dense).float().mean())
    # 1c. block lists of the flex BlockMask: Triton prefix sums vs the stable sorts (must be identical)
    from blade_ops.attention.backends import flex as flex_mod

    bm_mask = torch.rand(2, 12, 256, 265, device=dev) < 0.1
    bm_mask[..., 256:] = True
    mm, _, masked = flex_mod._mods(256 * 128 + 1092, KVBias(((32760, 32768, float("-inf")),)))
    fast = flex_mod.build_flex_block_mask(bm_mask, 128, 32760, 256 * 128 + 1092, mm, masked, True)
    use_triton = flex_mod._use_triton_lists
    flex_mod._use_triton_lists = lambda m: False
    try:
        slow = flex_mod.build_flex_block_mask(bm_mask, 128, 32760, 256 * 128 + 1092, mm, masked, True)
    finally:
        flex_mod._use_triton_lists = use_triton
    fields = ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices", "q_num_blocks", "q_indices",
              "full_q_num_blocks", "full_q_indices")
    checks["blockmask_lists_differing_frac_err"] = max(
        float((getattr(fast, f_) != getattr(slow, f_)).float().mean()) for f_ in fields
    )
    # 2. flex (compiled) vs torch oracle, forward, LSE and gradients, random masks, folded-bias layout
    b, h, length, d, bs = 2, 2, 1000, 64, 128
    q, k, v = (torch.randn(b, h, length, d, device=dev, requires_grad=True) for _ in range(3))
    nb = -(-length // bs)
    mask = torch.rand(b, h, nb, nb, device=dev) < 0.4
    mask[..., 0] = True
    bias = KVBias(((900, 1000, 0.7),))
    for kv_bias in (None, bias):
        o1, l1 = get_backend("torch").fn(q, k, v, mask, bs, 0.125, kv_bias=kv_bias)
        o2, l2 = get_backend("flex").fn(q, k, v, mask, bs, 0.125, kv_bias=kv_bias)
        g = torch.randn_like(o1)
        g1 = torch.autograd.grad(o1, (q, k, v), g)
        g2 = torch.autograd.grad(o2, (q, k, v), g)
        tag = "bias" if kv_bias else "plain"
        checks[f"flex_vs_torch_{tag}_out_rel_err"] = rel_err(o2, o1)
        checks[f"flex_vs_torch_{tag}_lse_max_abs_err"] = float((l2 - l1).abs().max())
        checks[f"flex_vs_torch_{tag}_grad_rel_err"] = max(rel_err(a, r) for a, r in zip(g2, g1, strict=True))
    # 3. Triton token permutation and its backward vs index_select
    perm = torch.randperm(3000, device=dev)
    inverse = torch.argsort(perm)
    x = torch.randn(2, 3, 3000, 128, device=dev, dtype=torch.bfloat16).transpose(1, 2).contiguous().transpose(1, 2)
    x = x.detach().requires_grad_()
    y = permute_tokens(x, perm, inverse)
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, gy)
    err = (y - x.index_select(2, perm)).abs().max() + (gx - gy.index_select(2, inverse)).abs().max()
    checks["permute_max_abs_err"] = float(err)
    # 4. whole ASA, flex vs torch backend, text tokens, fold and merge
    grid, nt = (5, 10, 13), 40
    q, k, v = structured_qkv(2, 2, grid, nt, 64, dtype=torch.float32, device=dev)
    cfg = ASAConfig(block_size=128, num_keep=16, min_ratio=0.2, max_ratio=0.5, sample_gap=15)
    ref = asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg, backend="torch")
    for mode in ("fold", "merge"):
        c = ASAConfig.from_dict({**cfg.to_dict(), "global_mode": mode})
        out = asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=c, backend="flex")
        checks[f"asa_flex_{mode}_vs_torch_rel_err"] = rel_err(out, ref)
    # gradients through the folded layout (Triton permutation + pooling backward) and the flex backward
    qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))
    g = torch.randn_like(q)
    grads = {}
    for backend in ("torch", "flex"):
        out = asa_attention(qg, kg, vg, grid=grid, num_text_tokens=nt, config=cfg, backend=backend)
        grads[backend] = torch.autograd.grad(out, (qg, kg, vg), g)
    checks["asa_flex_fold_grad_vs_torch_rel_err"] = max(
        rel_err(a, r_) for a, r_ in zip(grads["flex"], grads["torch"], strict=True)
    )
    bad = {k_: v_ for k_, v_ in checks.items() if ("err" in k_ and v_ > 5e-3) or not math.isfinite(v_)}
    results["checks_ok"] = not bad
    logger.info("checks: %s", json.dumps(checks, indent=1))
    if bad:
        logger.error("checks failed: %s", bad)


def bench_shape(name: str, args, results: dict) -> None:
    """Dense SDPA vs ASA at one model shape; fills results[name]."""
    b, h, grid, nt, d = SHAPES[name]
    cfg = ASAConfig.for_family(name, num_keep=args.num_keep)
    r = results.setdefault(name, {"shape": [b, h, grid[0] * grid[1] * grid[2] + nt, d], "grid": grid, "text": nt})
    r["config"] = cfg.to_dict()
    q, k, v = structured_qkv(b, h, grid, nt, d, sharpness=args.sharpness)
    length = q.shape[2]
    flops = 4.0 * b * h * length * length * d
    r["dense_tflop"] = flops / 1e12
    do = torch.randn_like(q)

    # dense references
    from torch.nn.attention import sdpa_kernel

    dense_out = None
    for kname, kb in _sdpa_backends().items():
        try:
            with sdpa_kernel(kb):
                out = F.scaled_dot_product_attention(q, k, v)
                dense_out = out if dense_out is None else dense_out
                ms = _bench(lambda: F.scaled_dot_product_attention(q, k, v))
                qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))

                def fb(qg=qg, kg=kg, vg=vg):
                    o = F.scaled_dot_product_attention(qg, kg, vg)
                    return torch.autograd.grad(o, (qg, kg, vg), do)

                ms_fb = _bench(fb)
            r[f"dense_{kname}_fwd_ms"] = ms
            r[f"dense_{kname}_fwdbwd_ms"] = ms_fb
            r[f"dense_{kname}_fwd_tflops"] = flops / ms / 1e9
            r[f"dense_{kname}_fwdbwd_tflops"] = 3.5 * flops / ms_fb / 1e9
        except RuntimeError as err:
            r[f"dense_{kname}_error"] = str(err)[:200]
        _save(results, args)
    best_fwd = min(r.get(f"dense_{n}_fwd_ms", float("inf")) for n in _sdpa_backends())
    best_fb = min(r.get(f"dense_{n}_fwdbwd_ms", float("inf")) for n in _sdpa_backends())

    # ASA everything included
    stats = ASAStats()
    plans: list = []

    def asa_fwd():
        return asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg, backend="flex", stats=stats)

    t0 = time.time()
    out = asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg, backend="flex", plan_out=plans)
    torch.cuda.synchronize()
    r["asa_first_call_s"] = time.time() - t0
    if not torch.isfinite(out).all():
        raise RuntimeError("ASA produced non-finite values")
    r["asa_fwd_ms"] = _bench(asa_fwd)
    r["speedup_fwd"] = best_fwd / r["asa_fwd_ms"]
    sel = plans[0].selection
    r["density"] = float(sel.density())
    r["rel_err_vs_dense"] = rel_err(out, dense_out)
    cfg_ng = ASAConfig.from_dict({**cfg.to_dict(), "use_global": False})
    out_ng = asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg_ng, backend="flex")
    r["rel_err_vs_dense_no_global"] = rel_err(out_ng, dense_out)
    r["asa_fwd_no_global_ms"] = _bench(
        lambda: asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg_ng, backend="flex")
    )
    del out_ng
    _save(results, args)

    qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))

    def asa_fb():
        o = asa_attention(qg, kg, vg, grid=grid, num_text_tokens=nt, config=cfg, backend="flex")
        return torch.autograd.grad(o, (qg, kg, vg), do)

    t0 = time.time()
    asa_fb()
    torch.cuda.synchronize()
    r["asa_fwdbwd_first_call_s"] = time.time() - t0
    r["asa_fwdbwd_ms"] = _bench(asa_fb)
    r["speedup_fwdbwd"] = best_fb / r["asa_fwdbwd_ms"]
    _save(results, args)

    # pieces (forward): reorder (q; k and v straight into the folded layout with the pooled tokens), estimate,
    # rule, block-mask build, kernel
    perm, inverse = token_order(grid, nt, q.device)
    num_video = grid[0] * grid[1] * grid[2]
    start = -(-length // 128) * 128
    r["t_reorder_ms"] = _bench(
        lambda: (
            permute_tokens(q, perm, inverse),
            permute_and_fold(k, perm, inverse, num_video, cfg.sample_gap, start),
            permute_and_fold(v, perm, inverse, num_video, cfg.sample_gap, start),
        )
    )
    r["t_inverse_ms"] = _bench(lambda: permute_tokens(out, inverse, perm))
    qc, kc = q.index_select(2, perm), k.index_select(2, perm)
    offsets = sample_offsets(b, h, cfg.num_keep, 128, q.device)
    precision = "fp8" if fp8_supported(q.device) else "bf16"  # what "auto" resolves to here
    r["estimate_precision"] = precision
    r["estimate_config"] = launch_config(cfg.num_keep, d, precision)
    r["t_estimate_ms"] = _bench(lambda: estimate_block_importance(qc, kc, offsets, 128))
    r["t_estimate_bf16_ms"] = _bench(lambda: estimate_block_importance(qc, kc, offsets, 128, precision="bf16"))
    from blade_ops.attention.mask import select_blocks, text_block_range

    imp = estimate_block_importance(qc, kc, offsets, 128)
    nkb = -(-length // 128)
    first_text = text_block_range(length, nt, 128)
    r["t_rule_ms"] = _bench(
        lambda: select_blocks(imp, cfg.tau, cfg.min_blocks(nkb), cfg.max_blocks(nkb), first_text_block=first_text)
    )
    r["t_rule_torch_ms"] = _bench(
        lambda: select_blocks(
            imp, cfg.tau, cfg.min_blocks(nkb), cfg.max_blocks(nkb), first_text_block=first_text, impl="torch"
        )
    )
    kp = pool_kv(kc, num_video, cfg.sample_gap)
    npb = -(-kp.shape[2] // 128)
    mask = torch.cat([sel.dense, sel.dense.new_ones(b, h, sel.dense.shape[2], npb)], dim=-1)
    len_k2 = nkb * 128 + kp.shape[2]
    mm, _, masked = _mods(len_k2, None)
    r["t_blockmask_fwd_ms"] = _bench(lambda: build_flex_block_mask(mask, 128, length, len_k2, mm, masked, False))
    r["t_blockmask_fwdbwd_ms"] = _bench(lambda: build_flex_block_mask(mask, 128, length, len_k2, mm, masked, True))
    kept_blocks = float(mask.float().sum())
    r["kept_blocks_incl_pooled"] = kept_blocks
    overhead = r["t_estimate_ms"] + r["t_rule_ms"] + r["t_blockmask_fwd_ms"]
    r["overhead_ms"] = overhead
    r["overhead_share"] = overhead / r["asa_fwd_ms"]
    kernel_ms = r["asa_fwd_ms"] - overhead - r["t_reorder_ms"] - r["t_inverse_ms"]
    r["t_kernel_fwd_ms_derived"] = kernel_ms
    kept_flops = 4.0 * d * 128 * 128 * kept_blocks
    r["kept_tflop"] = kept_flops / 1e12
    r["kernel_tflops_on_kept"] = kept_flops / kernel_ms / 1e9
    r["kernel_vs_dense_throughput"] = r["kernel_tflops_on_kept"] / max(
        r.get(f"dense_{n}_fwd_tflops", 0.0) for n in _sdpa_backends()
    )
    # attention mass kept on 1024 random query rows (fp32, curve order, sparse blocks only)
    g = torch.Generator(device=q.device).manual_seed(3)
    rows = torch.randint(0, length, (1024,), device=q.device, generator=g)
    s = torch.matmul(qc[:, :, rows].float(), kc.float().transpose(-1, -2)) / math.sqrt(d)
    p = torch.softmax(s, dim=-1)
    keep = sel.dense[:, :, rows // 128, :].repeat_interleave(128, dim=-1)[..., :length]
    r["attention_mass_kept"] = float((p * keep).sum(-1).mean())
    # the same with a bf16 estimate: what the fp8 estimate changes in the selection, the mass and the output
    cfg_bf16 = ASAConfig.from_dict({**cfg.to_dict(), "estimate_precision": "bf16"})
    plans_bf16: list = []
    out_bf16 = asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg_bf16, backend="flex",
                             plan_out=plans_bf16)
    sel_bf16 = plans_bf16[0].selection
    keep = sel_bf16.dense[:, :, rows // 128, :].repeat_interleave(128, dim=-1)[..., :length]
    r["attention_mass_kept_bf16_estimate"] = float((p * keep).sum(-1).mean())
    r["density_bf16_estimate"] = float(sel_bf16.density())
    r["rel_err_vs_dense_bf16_estimate"] = rel_err(out_bf16, dense_out)
    r["selection_jaccard_fp8_vs_bf16"] = float((sel.dense & sel_bf16.dense).sum() / (sel.dense | sel_bf16.dense).sum())
    r["asa_fwd_bf16_estimate_ms"] = _bench(
        lambda: asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg_bf16, backend="flex")
    )
    del s, p, keep, out_bf16
    # the sparse kernel alone (block mask prebuilt), with a few tile options
    if args.variants:
        from torch.nn.attention.flex_attention import flex_attention

        from blade_ops.attention.asa import _fold_call

        captured = {}

        def grab(q_, k_, v_, m_, bs_, sc_, *, kv_bias=None):
            captured.update(k=k_, v=v_, mask=m_, bias=kv_bias)
            return q_, None

        k2 = permute_and_fold(k, perm, inverse, num_video, cfg.sample_gap, start)
        v2 = permute_and_fold(v, perm, inverse, num_video, cfg.sample_gap, start)
        _fold_call(grab, qc, k2, v2, sel, 128, 1 / math.sqrt(d), math.log(cfg.sample_gap), length, start, kp.shape[2])
        lk = captured["k"].shape[2]
        mm2, sm2, masked2 = _mods(lk, captured["bias"])
        bm = build_flex_block_mask(captured["mask"], 128, length, lk, mm2, masked2, False)
        variants = {
            "pipeline": flex_options(qc, False),  # what asa_attention passes for a forward-only call
            "default": None,
            "default_TMA": {"USE_TMA": True},
            "M64_N128_w4_s3_TMA": {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3, "USE_TMA": True},
            "nobias_default": "nobias",
        }
        tiles = {64: ((128, 64, 4, 3), (64, 64, 4, 4)),  # head dim 64 (CogVideoX)
                 128: ((128, 128, 8, 3), (128, 128, 8, 2), (128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3))}
        if d in tiles:  # a few more tile shapes, all with TMA loads
            for bm_, bn_, w_, s_ in tiles[d]:
                variants[f"M{bm_}_N{bn_}_w{w_}_s{s_}_TMA"] = {
                    "BLOCK_M": bm_, "BLOCK_N": bn_, "num_warps": w_, "num_stages": s_, "USE_TMA": True,
                }
        vres = r.setdefault("kernel_variants_ms", {})
        for vname, opts in variants.items():
            try:
                fn = torch.compile(flex_attention, dynamic=False, fullgraph=True)
                smod = None if opts == "nobias" else sm2
                kopt = None if opts == "nobias" else opts

                def call(fn=fn, smod=smod, kopt=kopt):
                    return fn(qc, captured["k"], captured["v"], score_mod=smod, block_mask=bm,
                              scale=1 / math.sqrt(d), kernel_options=kopt)

                with compile_limit_context():
                    call()
                    vres[vname] = _bench(call)
            except Exception as err:  # an option this PyTorch does not take
                vres[vname] = repr(err)[:160]
            logger.info("kernel variant %s: %s", vname, vres[vname])
            _save(results, args)
        r["kernel_options_pipeline"] = str(variants["pipeline"])
        r["t_kernel_fwd_ms"] = vres["pipeline"] if isinstance(vres.get("pipeline"), float) else None
        if r["t_kernel_fwd_ms"]:
            r["kernel_tflops_on_kept"] = kept_flops / r["t_kernel_fwd_ms"] / 1e9
            r["kernel_vs_dense_throughput"] = r["kernel_tflops_on_kept"] / max(
                r.get(f"dense_{n}_fwd_tflops", 0.0) for n in _sdpa_backends()
            )
            # estimate + rule + block-mask build as they cost inside the pipeline (overlapping launches included)
            r["overhead_in_pipeline_ms"] = (
                r["asa_fwd_ms"] - r["t_kernel_fwd_ms"] - r["t_reorder_ms"] - r["t_inverse_ms"]
            )
            r["overhead_share_in_pipeline"] = r["overhead_in_pipeline_ms"] / r["asa_fwd_ms"]

    # estimate at num_keep 16 (the paper's value) for comparison
    off16 = sample_offsets(b, h, 16, 128, q.device)
    r["t_estimate_S16_ms"] = _bench(lambda: estimate_block_importance(qc, kc, off16, 128))
    cfg16 = ASAConfig.from_dict({**cfg.to_dict(), "num_keep": 16})
    plans16: list = []
    out16 = asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg16, backend="flex", plan_out=plans16)
    r["asa_fwd_S16_ms"] = _bench(
        lambda: asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg16, backend="flex")
    )
    r["speedup_fwd_S16"] = best_fwd / r["asa_fwd_S16_ms"]
    r["density_S16"] = float(plans16[0].selection.density())
    r["rel_err_vs_dense_S16"] = rel_err(out16, dense_out)
    r["recompiles"] = int(torch._dynamo.utils.counters["stats"].get("unique_graphs", 0))
    _save(results, args)


def _save(results: dict, args) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


def render_markdown(results: dict, command: str) -> str:
    """The "Attention" section of docs/BENCHMARKS.md from a results dict."""
    env = results.get("env", {})
    lines = [
        "## Attention",
        "",
        f"Command: `{command}`  ",
        f"Device: {env.get('device')}; torch {env.get('torch')}, triton {env.get('triton')}; date {env.get('date')}.",
        "",
        "Inputs: smooth random spatio-temporal fields (Gaussian-blurred noise, sigma 2 tokens in t, 3 in h/w, plus "
        "30% white noise, 32 channels) projected per head to q/k/v (k = q's projection + 50% noise, q scaled x2); "
        "CogVideoX text tokens Gaussian. bf16. Reference ASA settings (`ASAConfig.for_family`), Flex backend, "
        "global branch folded into the sparse call. Times are `triton.testing.do_bench` medians in ms; "
        "TFLOP/s count dense FLOPs (4·B·H·L²·D forward, 3.5x that forward+backward).",
        "",
        "| shape | cuDNN fwd | flash fwd | ASA fwd | speed-up fwd | cuDNN f+b | flash f+b | ASA f+b | speed-up f+b |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def f(x, spec=".2f"):
        return "n/a" if x is None else format(x, spec)

    for name in SHAPES:
        r = results.get(name)
        if not r:
            continue
        shp = "x".join(str(s) for s in r["shape"])
        lines.append(
            f"| {name} {shp} | {f(r.get('dense_cudnn_fwd_ms'))} | {f(r.get('dense_flash_fwd_ms'))} | "
            f"{f(r.get('asa_fwd_ms'))} | {f(r.get('speedup_fwd'))}x | {f(r.get('dense_cudnn_fwdbwd_ms'))} | "
            f"{f(r.get('dense_flash_fwdbwd_ms'))} | {f(r.get('asa_fwdbwd_ms'))} | {f(r.get('speedup_fwdbwd'))}x |"
        )
    lines += [
        "",
        "| shape | density | mass kept | rel. error vs dense (without global branch) | reorder, pooling, inverse | "
        "estimate S=32 (S=16; bf16 S=32) | rule | block mask fwd (f+b) | sparse kernel alone | "
        "estimate+rule+mask share | kernel TFLOP/s on kept FLOPs (vs dense) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in SHAPES:
        r = results.get(name)
        if not r or "t_estimate_ms" not in r:
            continue
        best = max(r.get(f"dense_{n}_fwd_tflops", 0.0) for n in ("cudnn", "flash"))
        kernel = r.get("t_kernel_fwd_ms") or r["t_kernel_fwd_ms_derived"]
        share = r.get("overhead_share_in_pipeline", r["overhead_share"])
        lines.append(
            f"| {name} | {f(r['density'], '.3f')} | {f(r['attention_mass_kept'], '.3f')} | "
            f"{f(r['rel_err_vs_dense'], '.3f')} ({f(r.get('rel_err_vs_dense_no_global'), '.3f')}) | "
            f"{f(r['t_reorder_ms'] + r['t_inverse_ms'] + r.get('t_pool_ms', 0.0) + r.get('t_cat_fold_ms', 0.0))} | "
            f"{f(r['t_estimate_ms'])} ({f(r.get('t_estimate_S16_ms'))}; {f(r.get('t_estimate_bf16_ms'))}) | "
            f"{f(r['t_rule_ms'])} | "
            f"{f(r['t_blockmask_fwd_ms'])} ({f(r['t_blockmask_fwdbwd_ms'])}) | "
            f"{f(kernel)} | {f(100 * share, '.0f')}% | "
            f"{f(r['kernel_tflops_on_kept'], '.0f')} ({f(100 * r['kernel_tflops_on_kept'] / best, '.0f')}% of "
            f"{f(best, '.0f')}) |"
        )
    wan = results.get("wan", {})
    if "asa_fwd_ms" in wan:
        share = wan.get("overhead_share_in_pipeline", wan.get("overhead_share"))
        tput = wan.get("kernel_vs_dense_throughput")
        targets = [
            ("ASA forward >= 3x the fastest dense backend (Wan)", wan.get("speedup_fwd"), 3.0, "x"),
            ("ASA forward+backward >= 3x (Wan)", wan.get("speedup_fwdbwd"), 3.0, "x"),
            ("estimate + rule + block-mask build <= 15% of ASA forward (Wan, in the pipeline)", share, 0.15, "<"),
            ("sparse kernel throughput on kept FLOPs >= 60% of dense (Wan)", tput, 0.60, ">"),
        ]
        lines += ["", "Targets:", ""]
        for text, value, bound, kind in targets:
            if value is None:
                lines.append(f"- {text}: not measured")
                continue
            ok = value <= bound if kind == "<" else value >= bound
            shown = f"{value:.2f}x" if kind == "x" else f"{100 * value:.0f}%"
            lines.append(f"- {text}: {shown}, {'reached' if ok else 'NOT reached'}")
        if "t_blockmask_fwd_ms" in wan:
            standalone = wan["t_estimate_ms"] + wan["t_rule_ms"] + wan["t_blockmask_fwd_ms"]
            lines.append(
                f"- the same three pieces timed alone: {standalone:.2f} ms, "
                f"{100 * standalone / wan['asa_fwd_ms']:.0f}% of the ASA forward (the in-pipeline share is the ASA "
                "forward minus sparse kernel, reorder and inverse, the kernel timed alone with the options the "
                "pipeline passes)"
            )
        for fam in SHAPES:
            rf = results.get(fam, {})
            if "asa_fwd_bf16_estimate_ms" in rf:
                lines.append(
                    f"- {fam}, estimate in {rf['estimate_precision']} (the default on this GPU) against bf16: "
                    f"ASA forward {rf['asa_fwd_ms']:.2f} against {rf['asa_fwd_bf16_estimate_ms']:.2f} ms, estimate "
                    f"{rf['t_estimate_ms']:.2f} against {rf['t_estimate_bf16_ms']:.2f} ms; density "
                    f"{rf['density']:.3f} against {rf['density_bf16_estimate']:.3f}, attention mass kept "
                    f"{rf['attention_mass_kept']:.3f} against {rf['attention_mass_kept_bf16_estimate']:.3f}, relative "
                    f"error vs dense {rf['rel_err_vs_dense']:.3f} against {rf['rel_err_vs_dense_bf16_estimate']:.3f}; "
                    f"the two selections share {100 * rf['selection_jaccard_fp8_vs_bf16']:.1f}% of their blocks "
                    "(intersection over union)"
                )
        if "asa_fwd_S16_ms" in wan:
            lines.append(
                f"- with num_keep=16 (the paper's value): ASA forward {wan['asa_fwd_S16_ms']:.2f} ms "
                f"({wan['speedup_fwd_S16']:.2f}x), density {wan['density_S16']:.3f}, relative error "
                f"{wan['rel_err_vs_dense_S16']:.3f}; estimate {wan['t_estimate_S16_ms']:.2f} ms"
            )
    if "rel_err_vs_dense_no_global" in wan and "t_estimate_ms" in wan:
        lines += [
            "",
            "Notes:",
            "",
            "- The estimate's work is inherent in the method: sampled queries x sampled keys is "
            "2·(L·S/128)²·D FLOPs per head (about 3% of dense at num_keep=32); the fused kernel runs it at about "
            f"{_estimate_tflop(wan) / wan['t_estimate_ms'] * 1e3:.0f} TFLOP/s at the Wan shape in "
            f"{wan.get('estimate_precision', 'bf16')} (bf16: "
            f"{_estimate_tflop(wan) / wan.get('t_estimate_bf16_ms', wan['t_estimate_ms']) * 1e3:.0f}) and never "
            "writes the sampled scores. The fp8 estimate scores e4m3 copies of the sampled tokens (a scale per "
            "sampled query, one per sampled key block, applied to the block maxima): it only ranks blocks, and "
            "`estimate_precision=\"bf16\"` turns it off.",
            "- The BlockMask's block lists come from one Triton prefix-sum launch per side, identical to the stable "
            "sorts of the CPU path (query-side lists only when gradients are needed).",
            "- The global branch follows the reference: every query attends to the pooled tokens of all blocks "
            "(kept ones included) with bias ln(sample_gap). On these inputs the relative error vs dense is "
            f"{wan['rel_err_vs_dense']:.3f} with it and {wan['rel_err_vs_dense_no_global']:.3f} without it (Wan; "
            f"forward without it {wan.get('asa_fwd_no_global_ms', float('nan')):.2f} ms): the error comes from the "
            f"{100 * (1 - wan['attention_mass_kept']):.0f}% of attention mass outside the kept blocks, which the "
            "distillation is meant to absorb.",
            "- Relative errors depend on the inputs: these synthetic fields are not the inputs behind the numbers "
            "quoted for other sparse kernels, so compare errors only on the same inputs.",
        ]
    checks = results.get("checks")
    if checks:
        lines += ["", "GPU checks against the PyTorch references (fresh random inputs): " + ", ".join(
            f"{k} {v:.1e}" for k, v in checks.items()) + "."]
        if any(k_.startswith("estimate_fp8") for k_ in checks):
            lines[-1] += (
                " The fp8 estimate checks compare the kernel with the reference on the same e4m3 tokens (the "
                "quantiser itself matches the reference bit for bit, tests/attention/test_estimate.py); what remains "
                "is the fp8 tensor cores' accumulation, which keeps fewer mantissa bits than fp32."
            )
    return "\n".join(lines) + "\n"


def _estimate_tflop(r: dict) -> float:
    b, h, length, d = r["shape"]
    sampled = -(-length // 128) * r["config"]["num_keep"]
    return 2.0 * b * h * sampled * sampled * d / 1e12


def write_docs_section(md: str, path: Path) -> None:
    """Replace (or append) the "## Attention" section of ``path``, leaving other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find("## Attention")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + md
    else:
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + md.rstrip("\n") + "\n" + ("\n" + text[nxt + 1 :] if nxt >= 0 else "")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="wan,cogvideox", help="comma list of " + ", ".join(SHAPES))
    parser.add_argument("--num-keep", type=int, default=32, help="sampled tokens per block (reference 32)")
    parser.add_argument("--sharpness", type=float, default=2.0, help="query scale of the synthetic inputs")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "attention.json"))
    parser.add_argument("--skip-checks", action="store_true")
    parser.add_argument("--variants", action="store_true", help="also time the sparse kernel alone with tile options")
    parser.add_argument("--write-docs", action="store_true", help="update the Attention section of docs/BENCHMARKS.md")
    parser.add_argument("--render", default=None, help="only render a results JSON into docs/BENCHMARKS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    docs = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
    command = "python benchmarks/attention.py " + " ".join(sys.argv[1:])
    if args.render:
        results = json.loads(Path(args.render).read_text())
        produced = results.get("command", "python benchmarks/attention.py")
        render = f"python benchmarks/attention.py --render {Path(args.render).name}"
        write_docs_section(render_markdown(results, f"{produced}`, then `{render}"), docs)
        return
    if not torch.cuda.is_available():
        raise RuntimeError("benchmarks/attention.py needs a CUDA GPU.")
    import triton

    results = {
        "command": command,
        "env": {
            "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "date": datetime.date.today().isoformat(),
        },
    }
    if not args.skip_checks:
        try:
            check_correctness(results)
        except Exception as err:  # keep timing even if a check fails; the JSON records it
            logger.exception("correctness checks failed")
            results["checks_error"] = repr(err)[:500]
        _save(results, args)
    for name in args.shapes.split(","):
        try:
            bench_shape(name, args, results)
        except Exception as err:
            logger.exception("benchmark %s failed", name)
            results.setdefault(name, {})["error"] = repr(err)[:500]
        _save(results, args)
        torch.cuda.empty_cache()
    md = render_markdown(results, command)
    logger.info("\n%s", md)
    if args.write_docs:
        write_docs_section(md, docs)


if __name__ == "__main__":
    main()
