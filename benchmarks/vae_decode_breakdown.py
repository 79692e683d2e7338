"""Where the Wan VAE decode spends its time at 81x480x832 (latent 21x60x104), bf16, on one GPU.

Times the pipeline's decode (``decode_wan_chunked``: default chunk, channels-last) eager and with the decoder's
parts compiled, each with cuDNN's algorithm search (``torch.backends.cudnn.benchmark``) off and on, and with the
decoder's lean forwards (``set_fast_decode_ops``: conv padding in the convolution, fused RMS norm, bf16
upsampling), checks each against the float32 decode of diffusers' own loop, then profiles one decode of each eager
setting and groups its GPU kernel time: convolutions (cuDNN / CUTLASS / implicit-GEMM kernels), copies and
concatenations, normalisation, and the rest. Random weights of the shipped config (time does not depend on them).

    python benchmarks/vae_decode_breakdown.py --json runs/vae_breakdown.json --markdown runs/vae_breakdown.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vae_decode import median_seconds  # noqa: E402

from blade_ops.models.variants import random_model  # noqa: E402
from blade_ops.pipeline.wan_decode import decode_wan_chunked  # noqa: E402

LATENT = (21, 60, 104)
KERNEL_GROUPS = (
    ("convolution", ("conv", "cudnn", "cutlass", "implicit", "xmma", "gemm", "sm90")),
    ("copy / cat", ("cat", "copy", "memcpy", "contiguous", "transpose")),
    ("norm", ("norm", "reduce", "welford")),
)


def kernel_group(name: str) -> str:
    low = name.lower()
    for group, keys in KERNEL_GROUPS:
        if any(key in low for key in keys):
            return group
    return "other (elementwise, upsampling, triton)"


def decoder_conv_flops(latent: tuple[int, int, int] = LATENT) -> float:
    """Convolution FLOPs of one Wan VAE decode at ``latent`` (T, H, W), counted on the CPU.

    Counted by torch's FlopCounterMode at a 4x4 latent with all T frames, then scaled by H*W/16: every decoder
    convolution's output grows in proportion to the frame area, so the count is exactly linear in it.
    """
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    vae = random_model("wan2.1-t2v-1.3b", "vae").eval()
    z = torch.randn(1, 16, latent[0], 4, 4)
    with FlopCounterMode(display=False) as counter:
        decode_wan_chunked(vae, z, 2)
    return counter.get_total_flops() * latent[1] * latent[2] / 16


def timed(fn, repeats: int) -> tuple[float, float, torch.Tensor]:
    """(median seconds, first-call seconds, output) of ``fn`` after one untimed first call."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    del out
    seconds, out = median_seconds(fn, repeats)
    return seconds, first, out


def profile_groups(fn) -> tuple[dict, list]:
    """GPU kernel milliseconds of one call of ``fn``, per group and for the 15 most expensive kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    per_kernel = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if getattr(event, "device_type", None) is None or "CUDA" not in str(event.device_type):
            continue
        us = getattr(event, "device_time", None) or getattr(event, "cuda_time", 0.0)
        per_kernel[event.name][0] += us / 1e3
        per_kernel[event.name][1] += 1
    groups = defaultdict(float)
    for name, (ms, _) in per_kernel.items():
        groups[kernel_group(name)] += ms
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:15]
    return dict(groups), [{"kernel": name[:120], "ms": ms, "calls": n} for name, (ms, n) in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="eager settings only")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    flops = decoder_conv_flops()
    print(json.dumps({"decoder_conv_tflop": flops / 1e12, "tflops_needed_for_0.6_s": flops / 0.6e12}), flush=True)
    if not torch.cuda.is_available():
        raise SystemExit("vae_decode_breakdown.py measures GPU time; no CUDA device is visible.")

    torch.manual_seed(0)
    with torch.device("cuda"):
        vae32 = random_model("wan2.1-t2v-1.3b", "vae").float().eval()
    z = torch.randn(1, 16, *LATENT, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.no_grad():
        ref = vae32.decode(z, return_dict=False)[0].float()
    vae = vae32.to(torch.bfloat16)
    del vae32
    torch.cuda.empty_cache()
    zb = z.to(torch.bfloat16)

    rows = []
    best = None
    settings = [(False, False, False), (False, True, False), (False, True, True)]
    if not args.no_compile:
        settings += [(True, False, False), (True, True, False), (True, True, True)]
    for compiled, search, fast in settings:
        torch.backends.cudnn.benchmark = search
        if compiled:
            from blade_ops.pipeline.compile import compile_vae_decoder

            compile_vae_decoder(vae)

        def fn(fast=fast):
            return decode_wan_chunked(vae, zb, fast_ops=fast)

        seconds, first, out = timed(fn, args.repeats)
        out = out.float()
        row = {
            "compiled": compiled, "cudnn_benchmark": search, "fast_ops": fast,
            "seconds": seconds, "first_call_s": first, "conv_tflops_per_s_overall": flops / seconds / 1e12,
            "rel_err_vs_fp32": ((out - ref).norm() / ref.norm()).item(), "finite": bool(torch.isfinite(out).all()),
        }
        del out
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # after every row, so a run cut short keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"conv_flops": flops, "rows": rows}, indent=1))
        if best is None or seconds < best[0]:
            best = (seconds, compiled, search)
        if not compiled:
            try:
                row["groups_ms"], row["top_kernels"] = profile_groups(fn)
            except Exception as err:  # the profiler is a diagnostic: keep the timings if it fails
                row["profile_error"] = repr(err)[:300]
            print(json.dumps({k: row.get(k) for k in ("groups_ms", "top_kernels", "profile_error")}), flush=True)

    lines = [
        "| decoder | cuDNN algorithm search | norm, padding, upsampling | decode (s) | first call (s) "
        "| conv TFLOP/s over the whole decode | rel. diff vs fp32 diffusers loop |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {'parts compiled' if r['compiled'] else 'eager'} | {'on' if r['cudnn_benchmark'] else 'off'} "
            f"| {'fast ops' if r['fast_ops'] else 'diffusers'} "
            f"| {r['seconds']:.3f} | {r['first_call_s']:.1f} | {r['conv_tflops_per_s_overall']:.0f} "
            f"| {r['rel_err_vs_fp32']:.1e}"
            f"{'' if r['finite'] else ' NaN!'} |"
        )
    for r in rows:
        if "groups_ms" in r:
            total = sum(r["groups_ms"].values())
            search = "on" if r["cudnn_benchmark"] else "off"
            pad = "fast ops" if r["fast_ops"] else "diffusers' ops"
            lines += ["", f"GPU kernel time of one eager decode, cuDNN search {search}, {pad} "
                      f"({total:.0f} ms in kernels):",
                      "", "| group | ms | share |", "|---|---|---|"]
            for group, ms in sorted(r["groups_ms"].items(), key=lambda kv: -kv[1]):
                lines.append(f"| {group} | {ms:.0f} | {ms / total:.0%} |")
            conv_ms = r["groups_ms"].get("convolution", 0.0)
            if conv_ms:
                lines.append(f"\nConvolution kernels: {flops / conv_ms / 1e9:.0f} TFLOP/s on their own time.")
    head = f"Decoder convolutions: {flops / 1e12:.1f} TFLOP per decode ({flops / 0.6e12:.0f} TFLOP/s for 0.6 s)."
    md = head + "\n\n" + "\n".join(lines) + "\n"
    print(md)
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": env, "conv_flops": flops, "rows": rows}, indent=1))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md)


if __name__ == "__main__":
    main()
