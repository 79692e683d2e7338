"""Contract: the block-importance estimate is REFERENCE.md ASA step 3 exactly (same sampled offsets for every
block of a (batch, head), max over sampled keys per block minus the row max over all sampled keys, max-pooled
over sampled queries, rows normalised), with replicate padding, no gradient, and the fused CUDA kernel equal
to the PyTorch reference."""

from __future__ import annotations

import math

import pytest
import torch

from blade_ops.attention.estimate import estimate_block_importance, sample_offsets


def _naive(q, k, offsets, bs):
    """Loop-by-loop transcription of the rule, padding by repeating the last token."""
    b, h, length, d = q.shape
    nb = math.ceil(length / bs)
    out = torch.zeros(b, h, nb, nb, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            offs = offsets[bi, hi].tolist()

            def rows(x, blk, offs=offs, bi=bi, hi=hi):
                return [x[bi, hi, min(blk * bs + o, length - 1)].double() for o in offs]

            qs = [rows(q, i) for i in range(nb)]
            ks = [rows(k, j) for j in range(nb)]
            for i in range(nb):
                for qi in qs[i]:
                    s = [[float(qi @ kj) / math.sqrt(d) for kj in ks[j]] for j in range(nb)]
                    m = max(max(row) for row in s)
                    for j in range(nb):
                        out[bi, hi, i, j] = max(out[bi, hi, i, j], math.exp(max(s[j]) - m))
    return out / out.sum(-1, keepdim=True)


@pytest.mark.parametrize("length, bs, s", [(64, 16, 4), (71, 16, 5), (40, 32, 32)])
def test_reference_matches_naive(length, bs, s):
    torch.manual_seed(0)
    q, k = torch.randn(2, 2, length, 8), torch.randn(2, 2, length, 8)
    off = sample_offsets(2, 2, s, bs, "cpu")
    p = estimate_block_importance(q, k, off, bs)
    assert p.dtype == torch.float32 and p.shape == (2, 2, math.ceil(length / bs), math.ceil(length / bs))
    torch.testing.assert_close(p.double(), _naive(q, k, off, bs), atol=1e-5, rtol=1e-4)
    assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)


def test_offsets():
    off = sample_offsets(2, 3, 8, 128, "cpu")
    assert off.shape == (2, 3, 8) and off.dtype == torch.int32
    assert (off >= 0).all() and (off < 128).all()
    assert (off[..., 1:] > off[..., :-1]).all()  # one per stratum, sorted, distinct
    assert torch.equal(off, sample_offsets(2, 3, 8, 128, "cpu"))  # deterministic (checkpoint recompute)
    assert not torch.equal(off[0, 0], off[0, 1])  # heads sample differently
    assert torch.equal(sample_offsets(1, 1, 128, 128, "cpu")[0, 0], torch.arange(128, dtype=torch.int32))


def test_no_grad_and_finite():
    q = torch.randn(1, 2, 50, 8, requires_grad=True) * 30
    k = torch.randn(1, 2, 50, 8, requires_grad=True) * 30
    p = estimate_block_importance(q, k, sample_offsets(1, 2, 4, 16, "cpu"), 16)
    assert not p.requires_grad
    assert torch.isfinite(p).all()


def test_triton_requires_cuda():
    q = torch.randn(1, 1, 32, 64)
    with pytest.raises(RuntimeError, match="Triton estimate needs CUDA"):
        estimate_block_importance(q, q, sample_offsets(1, 1, 16, 16, "cpu"), 16, impl="triton")
    with pytest.raises(ValueError, match="impl='cuda'"):
        estimate_block_importance(q, q, sample_offsets(1, 1, 16, 16, "cpu"), 16, impl="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("d, length, s", [(128, 4000, 32), (64, 3000, 16), (64, 128 * 7, 32)])
def test_triton_matches_reference(d, length, s):
    torch.manual_seed(0)
    q = torch.randn(2, 3, length, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 3, length, d, device="cuda", dtype=torch.bfloat16)
    off = sample_offsets(2, 3, s, 128, "cuda")
    ref = estimate_block_importance(q, k, off, 128, impl="torch")
    out = estimate_block_importance(q, k, off, 128, impl="triton")
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-3)
