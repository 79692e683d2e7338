"""VAE decode time at the BLADE benchmark sizes, for the settings the pipeline can choose between.

Random weights of the shipped full-size VAE configs (time does not depend on the weights); random latents of
the Wan 81x480x832 (21x60x104) and CogVideoX 49x480x720 (13x60x90) sizes. Each setting reports the median of a
few decodes after one warm-up, peak memory, and the relative difference of its frames to the float32 decode.

    python benchmarks/vae_decode.py --json runs/vae.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blade_ops.models.variants import shipped_config  # noqa: E402

SIZES = {"wan2.1-t2v-1.3b": (21, 60, 104), "cogvideox-5b": (13, 60, 90)}


def build_vae(variant: str, dtype: torch.dtype) -> torch.nn.Module:
    import diffusers

    cfg = shipped_config(variant, "vae")
    cls = getattr(diffusers, cfg.pop("_class_name"))
    torch.manual_seed(0)
    with torch.device("cuda"):
        vae = cls.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    return vae.to(dtype).eval()


@torch.no_grad()
def time_decode(vae, z, repeats: int, cudnn_benchmark: bool):
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        out = vae.decode(z, return_dict=False)[0]  # warm-up (and cuDNN autotune)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = vae.decode(z, return_dict=False)[0]
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    finally:
        torch.backends.cudnn.benchmark = prev
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30, out.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    for variant, (t, h, w) in SIZES.items():
        gen = torch.Generator("cuda").manual_seed(0)
        z32 = torch.randn(1, 16, t, h, w, device="cuda", generator=gen)
        ref = None
        for dtype, bench in [
            (torch.float32, False),
            (torch.bfloat16, False),
            (torch.bfloat16, True),
        ]:
            vae = build_vae(variant, dtype)
            if hasattr(vae, "use_slicing"):
                vae.use_slicing = False
            seconds, peak, out = time_decode(vae, z32.to(dtype), args.repeats, bench)
            if ref is None:
                ref = out
            err = ((out - ref).norm() / ref.norm()).item()
            finite = bool(torch.isfinite(out).all())
            rows.append(
                dict(
                    variant=variant,
                    dtype=str(dtype).split(".")[-1],
                    cudnn_benchmark=bench,
                    seconds=seconds,
                    peak_gib=peak,
                    rel_err_vs_fp32=err,
                    finite=finite,
                )
            )
            print(json.dumps(rows[-1]), flush=True)
            del vae, out
            torch.cuda.empty_cache()
    print("| VAE | dtype | cuDNN benchmark | decode (s) | peak (GiB) | rel. diff vs fp32 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['dtype']} | {r['cudnn_benchmark']} | {r['seconds']:.2f} | {r['peak_gib']:.1f} "
            f"| {r['rel_err_vs_fp32']:.1e}"
            f"{'' if r['finite'] else ' NaN!'} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
