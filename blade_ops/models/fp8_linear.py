"""fp8 (e4m3) linear layers for a transformer's blocks, on GPUs with fp8 tensor cores; reversible, inference only.

Each replaced ``nn.Linear`` (y = x W^T + b, W [N, K]) becomes an :class:`Fp8Linear`:

- the weight is quantised once to ``float8_e4m3fn`` with one scale per output channel: s_w[n] = amax_k |W[n, k]| /
  448 (448 is e4m3's largest finite value), W8 = round_e4m3(W / s_w);
- each call quantises the activations per token: s_x[m] = amax_k |x[m, k]| / 448 (amax clamped away from 0), x8 =
  round_e4m3(x / s_x), then ``torch._scaled_mm(x8 [M, K], W8^T [K, N] column-major, scale_a=s_x [M, 1] fp32,
  scale_b=s_w [1, N] fp32, out_dtype=bf16, bias=b in bf16)`` computes y[m, n] = s_x[m] s_w[n] (x8 W8^T)[m, n] + b[n]
  with fp32 accumulation ("row-wise" scaling). Row-wise scaling on CUDA needs a bf16 output and a bf16 bias, and K
  and N multiples of 16; an input of another dtype gets the product cast back and the bias added in its own dtype.

e4m3 keeps 3 mantissa bits (a relative rounding error of at most 2^-4 per element); with per-token and
per-channel scales the error of a product averages out to a few percent of the output's norm (the tests bound it by
0.05 against the float32 layer; benchmarks/fp8_linear.py measures a whole Wan2.1-1.3B pass).

Which layers: the family adapter names them (``ModelFamily.fp8_linears``: the attention projections and the
feed-forward network inside every block). Kept as they are: everything outside the blocks (patch embedding,
timestep and text embedders, the final norm and output projection: few tokens or the output's precision directly),
per-sample modulation layers (CogVideoX's adaptive norms: one row per sample, nothing to gain), and any listed
layer whose in or out features are not multiples of 16 (``torch._scaled_mm``'s requirement).

Reversible: the original ``nn.Linear`` stays inside its :class:`Fp8Linear` (as ``original``, moved with the model),
so :func:`restore_fp8_linears` puts back exactly the modules that were there and outputs are bit-identical again.
The fp8 copy costs one byte per weight on top of the model: this is about speed, not memory.

Order with ASA and LoRAs (:func:`blade_ops.prepare.prepare_transformer`): ASA, then the LoRAs, then the fp8 linears.
ASA's processors call ``attn.to_q(...)`` and friends, so they run through the fp8 layers unchanged. An unmerged
(peft) LoRA wraps an ``nn.Linear``: its ``base_layer`` is replaced, so the LoRA's own low-rank branch stays in the
model's dtype and only the base weight is quantised; a merged LoRA is in the weight when it is quantised. While fp8
linears are installed, LoRAs cannot be applied, merged, unmerged or removed (:func:`refuse_while_installed`):
restore first.

Where fp8 matmuls cannot run (no CUDA device, or compute capability below 8.9), selecting them is an error
(:func:`check_fp8_device`), never a silent fallback. torch's CPU ``_scaled_mm`` computes the same products slowly;
``allow_cpu=True`` uses it for tests and ``--smoke`` runs only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "FP8_MAX",
    "Fp8Linear",
    "Fp8Linears",
    "check_fp8_device",
    "fp8_linear_reference",
    "fp8_supported",
    "installed_fp8_linears",
    "install_fp8_linears",
    "quantize_rows",
    "refuse_while_installed",
    "restore_fp8_linears",
]

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
ALIGN = 16  # torch._scaled_mm needs K and N multiples of 16
MIN_AMAX = 1e-12  # an all-zero row gets this amax, so its scale is finite and its values quantise to 0
REQUIREMENT = (
    "fp8 linear layers need a CUDA GPU with fp8 tensor cores (compute capability 8.9 or later: RTX 40xx, L4/L40, "
    "H100/H200, B200 and newer)"
)
_HANDLE_ATTR = "_blade_fp8_linears"


def fp8_supported(device: torch.device | str) -> bool:
    """Whether ``device`` runs e4m3 matrix products on tensor cores (CUDA, compute capability >= 8.9)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def check_fp8_device(device: torch.device | str) -> None:
    """Raise RuntimeError, naming the requirement and what ``device`` is, unless it supports fp8 matmuls."""
    device = torch.device(device)
    if fp8_supported(device):
        return
    if device.type == "cuda" and torch.cuda.is_available():
        capability = torch.cuda.get_device_capability(device)
        what = f"{torch.cuda.get_device_name(device)} has compute capability {capability}"
    elif device.type == "cuda":
        what = "no CUDA device is available"
    else:
        what = f"the run is on {device}"
    raise RuntimeError(f"{REQUIREMENT}; {what}. Leave fp8 linears off.")


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row e4m3 quantisation of x [R, K]: (x8 [R, K] float8_e4m3fn, scale [R, 1] float32), x ~ x8 * scale.

    scale = amax over the row / 448 (amax clamped to >= 1e-12), so every row uses e4m3's whole range.
    """
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp(min=MIN_AMAX) / FP8_MAX
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE), scale


def fp8_linear_reference(
    x: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """What :class:`Fp8Linear` computes, in plain float32: quantise x per token, dequantise both, matmul, add bias.

    x [..., K]; weight_fp8 [N, K] e4m3; weight_scale [1, N] (or [N]) float32; bias [N] or None -> [..., N] in x's
    dtype. The test oracle of the ``_scaled_mm`` path (which rounds its output to bf16 on top of this).
    """
    x2 = x.reshape(-1, x.shape[-1])
    x8, x_scale = quantize_rows(x2)
    w = weight_fp8.float() * weight_scale.float().reshape(-1, 1)
    y = (x8.float() * x_scale) @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], w.shape[0])


class Fp8Linear(nn.Module):
    """An ``nn.Linear`` computed with e4m3 weights (per-output-channel scale) and e4m3 activations (per-token
    scale) through ``torch._scaled_mm``; ``original`` is the layer it replaces (see the module docstring)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"Fp8Linear replaces an nn.Linear; got {type(linear).__name__}.")
        if linear.in_features % ALIGN or linear.out_features % ALIGN:
            raise ValueError(
                f"Fp8Linear needs in and out features that are multiples of {ALIGN} (torch._scaled_mm); got "
                f"{linear.in_features} -> {linear.out_features}."
            )
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.original = linear
        with torch.no_grad():
            w8, scale = quantize_rows(linear.weight.detach())
        # Stored as uint8 bytes: a later module.to(dtype) casts floating-point buffers (float8 is one) but not these.
        self.register_buffer("weight_fp8", w8.view(torch.uint8), persistent=False)
        self.register_buffer("weight_scale", scale.reshape(1, -1), persistent=False)  # [1, N] float32

    @property
    def bias(self) -> torch.Tensor | None:
        return self.original.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3 (per-channel, per-token)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N] in x's dtype."""
        shape = x.shape
        x8, x_scale = quantize_rows(x.reshape(-1, self.in_features))
        bias = self.bias
        fused = bias is not None and x.dtype == torch.bfloat16  # row-wise _scaled_mm takes a bf16 bias only
        y = torch._scaled_mm(
            x8,
            self.weight_fp8.view(FP8_DTYPE).t(),  # [K, N], column-major as _scaled_mm needs
            scale_a=x_scale,
            scale_b=self.weight_scale.float(),
            bias=bias.to(torch.bfloat16) if fused else None,
            out_dtype=torch.bfloat16,
        ).to(x.dtype)
        if bias is not None and not fused:
            y = y + bias.to(x.dtype)
        return y.reshape(*shape[:-1], self.out_features)


@dataclass
class Fp8Linears:
    """What :func:`install_fp8_linears` changed: the swapped layers (to put back) and the listed ones it kept."""

    transformer: nn.Module
    swapped: list[tuple[nn.Module, str, nn.Linear]] = field(default_factory=list)  # (parent, attribute, original)
    names: list[str] = field(default_factory=list)  # module paths of the swapped layers
    kept: dict[str, str] = field(default_factory=dict)  # module path -> why it stays as it is

    def restore(self) -> None:
        """Put every original ``nn.Linear`` back (the transformer is as before :func:`install_fp8_linears`)."""
        while self.swapped:
            parent, attr, original = self.swapped.pop()
            setattr(parent, attr, original)
        self.names.clear()
        if self.transformer.__dict__.get(_HANDLE_ATTR) is self:
            del self.transformer.__dict__[_HANDLE_ATTR]


def installed_fp8_linears(transformer: nn.Module) -> Fp8Linears | None:
    """The handle of the fp8 linears installed on ``transformer``, or None."""
    return transformer.__dict__.get(_HANDLE_ATTR)


def refuse_while_installed(transformer: nn.Module, what: str) -> None:
    """Raise RuntimeError when fp8 linears are installed: ``what`` (a LoRA change) would miss their fp8 weights."""
    if installed_fp8_linears(transformer) is not None:
        raise RuntimeError(
            f"{what}: the transformer runs fp8 linear layers, which quantised the weights as they were. Restore them "
            "first (blade_ops.models.fp8_linear.restore_fp8_linears), change the LoRAs, then install them again."
        )


def _target(block: nn.Module, path: str) -> tuple[nn.Module, str, nn.Linear] | None:
    """(parent, attribute, linear) of the layer at ``path`` in ``block``, looking through a peft LoRA wrapper
    (whose ``base_layer`` is then the one replaced); None when the module there is not a linear layer."""
    parent_path, _, attr = path.rpartition(".")
    parent = block.get_submodule(parent_path) if parent_path else block
    module = getattr(parent, attr)
    base = getattr(module, "base_layer", None)
    if isinstance(base, nn.Linear):
        return module, "base_layer", base
    if isinstance(module, nn.Linear):
        return parent, attr, module
    return None


def install_fp8_linears(
    transformer: nn.Module, *, device: torch.device | str | None = None, allow_cpu: bool = False
) -> Fp8Linears:
    """Replace the family's per-token linear layers in every block of ``transformer`` by :class:`Fp8Linear`.

    ``device``: where the run computes (default: where the first such weight is); it must support fp8 matmuls
    (:func:`check_fp8_device`), unless it is the CPU and ``allow_cpu`` (tests and smoke runs: slow emulation).
    The weights are quantised where they are. Raises ValueError for a transformer of no known family, one that
    already has fp8 linears, or one where no listed layer qualifies. Returns the handle (also kept on the
    transformer, see :func:`installed_fp8_linears`).
    """
    from ..families import family_of_transformer

    family = family_of_transformer(transformer)
    if installed_fp8_linears(transformer) is not None:
        raise ValueError(f"{type(transformer).__name__} already runs fp8 linear layers; restore them first.")
    blocks = getattr(transformer, family.block_list)
    targets, kept = [], {}
    for i, block in enumerate(blocks):
        for path in family.fp8_linears:
            name = f"{family.block_list}.{i}.{path}"
            try:
                found = _target(block, path)
            except AttributeError:
                found = None
            if found is None:
                kept[name] = "not a linear layer (or missing) in this model"
            elif found[2].in_features % ALIGN or found[2].out_features % ALIGN:
                kept[name] = f"{found[2].in_features} -> {found[2].out_features} features, not multiples of {ALIGN}"
            else:
                targets.append((name, found))
    if not targets:
        example = next(iter(kept.items()), None)
        raise ValueError(
            f"No layer of this {family.label} transformer can run in fp8"
            + (f" (e.g. {example[0]}: {example[1]})." if example else ": it has no blocks.")
        )
    run_device = torch.device(device) if device is not None else targets[0][1][2].weight.device
    if not (allow_cpu and run_device.type == "cpu"):
        check_fp8_device(run_device)
    handle = Fp8Linears(transformer, kept=kept)
    try:
        for name, (parent, attr, linear) in targets:
            setattr(parent, attr, Fp8Linear(linear))
            handle.swapped.append((parent, attr, linear))
            handle.names.append(name)
    except BaseException:
        handle.restore()
        raise
    transformer.__dict__[_HANDLE_ATTR] = handle
    logger.info("fp8 linears: %d layers of %d blocks in e4m3 (%d kept as they are)", len(handle.names), len(blocks),
                len(kept))
    return handle


def restore_fp8_linears(transformer: nn.Module) -> bool:
    """Undo :func:`install_fp8_linears`; True if fp8 linears were installed."""
    handle = installed_fp8_linears(transformer)
    if handle is None:
        return False
    handle.restore()
    return True
