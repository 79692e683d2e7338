"""Contract: the Triton kernels behind ASA's CUDA fast paths compute what the PyTorch references compute: the
fused estimate equals ``estimate_block_importance_reference`` (rows normalised inside the kernel), and the
block lists written for FlexAttention's BlockMask equal the stable sorts of the CPU path, on both sides (query
and key) and with partial tail/masked blocks. Run on the CPU through Triton's interpreter in a subprocess
(``TRITON_INTERPRET`` must be set before Triton is imported); skipped where Triton is not installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_block_lists_match_stable_sorts():
    _run(
        """
        import torch
        from blade_ops.attention._mask_triton import ordered_blocks_triton
        from blade_ops.attention.backends.flex import _ordered, _partial_columns

        torch.manual_seed(0)
        for b, h, rows, cols in [(2, 3, 20, 29), (1, 2, 7, 300), (1, 1, 33, 5)]:
            mask = torch.rand(b, h, rows, cols) < 0.3
            mask[..., -1] = True
            # tail block and a masked range over blocks 2-3 are partial
            partial = _partial_columns(cols, 128, cols * 128 - 5, ((256, 388),), torch.device("cpu"))
            assert partial.sum() == 3
            none = torch.zeros(rows, dtype=torch.bool)
            got = ordered_blocks_triton(mask, none, partial)
            ref = (*_ordered(mask & partial), *_ordered(mask & ~partial))
            assert all(torch.equal(g, r) for g, r in zip(got, ref, strict=True)), (b, h, rows, cols)
            # query side: the transposed view, the partial flag now per row
            got = ordered_blocks_triton(mask.transpose(-1, -2), partial, none)
            mt = mask.transpose(-1, -2)
            ref = (*_ordered(mt & partial[:, None]), *_ordered(mt & ~partial[:, None]))
            assert all(torch.equal(g, r) for g, r in zip(got, ref, strict=True)), (b, h, rows, cols)
        """
    )


def test_fused_estimate_matches_reference():
    _run(
        """
        import torch
        from blade_ops.attention._estimate_triton import estimate_block_importance_triton, launch_config
        from blade_ops.attention.estimate import estimate_block_importance_reference, sample_offsets

        torch.manual_seed(0)
        for b, h, length, d, s, bs in [(1, 2, 1000, 64, 16, 128), (2, 1, 700, 32, 16, 64), (1, 1, 900, 64, 32, 128)]:
            q, k = torch.randn(b, h, length, d), torch.randn(b, h, length, d) * 2
            off = sample_offsets(b, h, s, bs, "cpu")
            ref = estimate_block_importance_reference(q, k, off, bs)
            for kb2 in (16, 64):  # pass 2 in several steps and in one
                cfg = {**launch_config(s, d), "KB2": kb2}
                out = estimate_block_importance_triton(q, k, off, bs, config=cfg)
                assert torch.isfinite(out).all()
                torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(out.sum(-1), torch.ones_like(out[..., 0]), atol=1e-5, rtol=0)
        """
    )


def test_fp8_estimate_matches_reference_on_its_quantised_tokens():
    """The fp8 kernel computes the reference estimate of the e4m3 tokens its quantiser wrote, with the scales the
    reference takes. (The interpreter's float->e4m3 conversion is not the hardware's: it flushes subnormals and
    drops the carry when rounding up to a power of two, so the rounded values are compared exactly on the GPU,
    tests/attention/test_estimate.py.)"""
    _run(
        """
        import torch
        from blade_ops.attention._estimate_triton import estimate_block_importance_triton, quantise_sampled_triton
        from blade_ops.attention.estimate import _sample_rows, estimate_block_importance_reference, sample_offsets

        torch.manual_seed(0)
        for b, h, length, d, s, bs in [(1, 2, 1000, 64, 16, 128), (2, 1, 700, 32, 16, 64), (1, 1, 900, 64, 32, 128)]:
            q, k = torch.randn(b, h, length, d) * 3, torch.randn(b, h, length, d)
            off = sample_offsets(b, h, s, bs, "cpu")
            nb = -(-length // bs)
            deq = {}
            for name, x, per_block in (("q", q, False), ("k", k, True)):
                x8, sc = quantise_sampled_triton(x, off, bs, per_block)
                sc = sc.view(b, h, nb, 1, 1) if per_block else sc.view(b, h, nb, s, 1)
                xs = _sample_rows(x, off, bs).float()
                amax = xs.abs().amax(dim=(-2, -1) if per_block else -1, keepdim=True)
                if not per_block:
                    amax = amax.amax(-1, keepdim=True)
                torch.testing.assert_close(sc.expand_as(amax), amax / 448.0)
                y, y8 = xs / sc, x8.float().view(xs.shape)
                assert (y8.abs() <= 448).all() and ((y8 == 0) | (y8.sign() == y.sign())).all(), name
                deq[name] = (y8 * sc).reshape(b, h, nb * s, d)
            out = estimate_block_importance_triton(q, k, off, bs, precision="fp8")
            assert torch.isfinite(out).all()
            every = torch.arange(s, dtype=torch.int32).expand(b, h, s)  # blocks of S rows, all of them sampled
            ref = estimate_block_importance_reference(deq["q"], deq["k"], every, s, scale=d ** -0.5)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
        """
    )
