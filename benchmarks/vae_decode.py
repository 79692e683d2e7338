"""VAE decode time at the BLADE benchmark sizes, for the settings the pipeline can choose between.

Random weights of the shipped full-size VAE configs (time does not depend on the weights); random latents of
the Wan 81x480x832 (21x60x104) and CogVideoX 49x480x720 (13x60x90) sizes. Each setting reports the median of a
few decodes after one warm-up, peak memory, and the relative difference of its frames to the float32 decode
of diffusers' own loop.

Wan settings: latent frames per decoder call (1 is diffusers' loop; more is blade_ops.pipeline.wan_decode),
optionally with the 3D convolutions in channels-last layout. CogVideoX settings: latent frames per decoder call
(diffusers' ``num_latent_frames_batch_size``, 2 by default). The last Wan row times the pipeline's whole decode
stage (``blade_ops.pipeline.decode``: scaling, decode, conversion to float frames on the CPU).

    python benchmarks/vae_decode.py --json runs/vae.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blade_ops.models.variants import random_model  # noqa: E402
from blade_ops.pipeline.wan_decode import decode_wan_chunked  # noqa: E402

SIZES = {"wan2.1-t2v-1.3b": (21, 60, 104), "cogvideox-5b": (13, 60, 90)}


def build_vae(variant: str, dtype: torch.dtype) -> torch.nn.Module:

    torch.manual_seed(0)
    with torch.device("cuda"):
        vae = random_model(variant, "vae")
    vae = vae.to(dtype).eval()
    if hasattr(vae, "use_slicing"):
        vae.use_slicing = False
    return vae


def channels_last_3d(vae: torch.nn.Module, enable: bool) -> None:
    """Put every Conv3d weight in channels-last (or back to contiguous) layout."""
    fmt = torch.channels_last_3d if enable else torch.contiguous_format
    for module in vae.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.weight.data = module.weight.data.to(memory_format=fmt)


def median_seconds(fn, repeats: int) -> tuple[float, torch.Tensor]:
    """(median seconds over ``repeats`` synchronised calls of ``fn``, the last output)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


@torch.no_grad()
def time_decode(fn, repeats: int):
    out = fn()  # warm-up
    torch.cuda.synchronize()
    del out
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    seconds, out = median_seconds(fn, repeats)
    return seconds, (torch.cuda.max_memory_allocated() - base) / 2**30, out


def wan_settings(vae_by_dtype, z32, args):
    """(label, dtype, chunk, channels_last, fn) for the Wan VAE."""
    def diffusers_loop(dtype):
        return lambda: vae_by_dtype[dtype].decode(z32.to(dtype), return_dict=False)[0]

    def chunked(dtype, chunk, cl=False):
        z = z32.to(dtype)
        if cl:
            z = z.contiguous(memory_format=torch.channels_last_3d)
        return lambda: decode_wan_chunked(vae_by_dtype[dtype], z, chunk)

    rows = [("diffusers loop", torch.float32, 1, False, diffusers_loop(torch.float32)),
            ("diffusers loop", torch.bfloat16, 1, False, diffusers_loop(torch.bfloat16))]
    for chunk in args.chunks:
        rows.append(("chunked", torch.bfloat16, chunk, False, chunked(torch.bfloat16, chunk)))
    rows.append(("chunked, channels-last", torch.bfloat16, 4, True, chunked(torch.bfloat16, 4, True)))
    return rows


POSTPROCESS = {
    "float, scale, permute, .cpu()": lambda v: (v.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).cpu(),
    "permute+float in one GPU copy, in-place scale, .cpu()": lambda v: _gpu_frames(v).cpu(),
    "same, into pinned memory": lambda v: _to_pinned(_gpu_frames(v)),
    "bf16 to CPU, then float": lambda v: (v.permute(0, 2, 3, 4, 1).contiguous().cpu().float() / 2 + 0.5).clamp(0, 1),
}


def _gpu_frames(video):
    frames = torch.empty(video.permute(0, 2, 3, 4, 1).shape, dtype=torch.float32, device=video.device)
    frames.copy_(video.permute(0, 2, 3, 4, 1))
    return frames.mul_(0.5).add_(0.5).clamp_(0, 1)


def _to_pinned(frames):
    host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
    host.copy_(frames)
    return host


def time_postprocess(video, repeats):
    """Seconds for each way of turning a decoded [B, 3, F, H, W] video into float [B, F, H, W, 3] CPU frames."""
    out = {}
    for label, fn in POSTPROCESS.items():
        fn(video)
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(video)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        out[label] = statistics.median(times)
        print(json.dumps({"postprocess": label, "seconds": out[label]}), flush=True)
    return out


def compile_decoder(vae, mode="default"):
    import torch._dynamo

    from blade_ops.pipeline.compile import compile_vae_decoder

    torch._dynamo.reset()
    compile_vae_decoder(vae, mode=mode)


def pipeline_decode_fn(vae, z32):
    from blade_ops.pipeline.decode import decode

    bundle = SimpleNamespace(family=SimpleNamespace(name="wan"), vae=vae, require=lambda *parts: None)
    # decode() takes latents in the transformer's normalised scale; these random latents stand in for them.
    return lambda: decode(bundle, z32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[2, 4, 8, 20])
    parser.add_argument("--compile", action="store_true", help="also time the Wan decoder under torch.compile")
    parser.add_argument("--wan-only", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []

    def record(variant, label, dtype, chunk, seconds, peak, out, ref):
        out = out.float()
        rows.append(dict(
            variant=variant, setting=label, dtype=str(dtype).split(".")[-1], chunk=chunk, seconds=seconds,
            peak_gib=peak, rel_err_vs_fp32=((out - ref).norm() / ref.norm()).item() if ref is not None else 0.0,
            finite=bool(torch.isfinite(out).all()),
        ))
        print(json.dumps(rows[-1]), flush=True)
        return out

    # Wan
    t, h, w = SIZES["wan2.1-t2v-1.3b"]
    z32 = torch.randn(1, 16, t, h, w, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    vaes = {dt: build_vae("wan2.1-t2v-1.3b", dt) for dt in (torch.float32, torch.bfloat16)}
    ref = None
    for label, dtype, chunk, cl, fn in wan_settings(vaes, z32, args):
        channels_last_3d(vaes[dtype], cl)
        seconds, peak, out = time_decode(fn, args.repeats)
        channels_last_3d(vaes[dtype], False)
        out = record("wan2.1-t2v-1.3b", label, dtype, chunk, seconds, peak, out, ref)
        ref = out if ref is None else ref
        del out
    if args.compile:
        from blade_ops.pipeline.compile import uncompile_vae_decoder

        vae = vaes[torch.bfloat16]
        for chunk, cl in [(4, False), (4, True), (2, True)]:
            compile_decoder(vae)
            channels_last_3d(vae, cl)
            z = z32.to(torch.bfloat16)
            z = z.contiguous(memory_format=torch.channels_last_3d) if cl else z
            start = time.perf_counter()
            decode_wan_chunked(vae, z, chunk)
            torch.cuda.synchronize()
            first = time.perf_counter() - start
            seconds, peak, out = time_decode(lambda v=vae, z=z, c=chunk: decode_wan_chunked(v, z, c), args.repeats)
            label = f"chunked, decoder compiled{', channels-last' if cl else ''} (first call {first:.0f} s)"
            out = record("wan2.1-t2v-1.3b", label, torch.bfloat16, chunk, seconds, peak, out, ref)
            channels_last_3d(vae, False)
            uncompile_vae_decoder(vae)
            del out
        post = time_postprocess(decode_wan_chunked(vae, z32.to(torch.bfloat16), 4), args.repeats)
        rows.append(dict(variant="postprocess", timings=post))
    seconds, peak, frames = time_decode(pipeline_decode_fn(vaes[torch.bfloat16], z32), args.repeats)
    rows.append(dict(variant="wan2.1-t2v-1.3b", setting="pipeline decode stage (to CPU float frames)",
                     dtype="bfloat16", chunk="default", seconds=seconds, peak_gib=peak, rel_err_vs_fp32=float("nan"),
                     finite=bool(torch.isfinite(frames).all())))
    print(json.dumps(rows[-1]), flush=True)
    del vaes, ref, frames
    torch.cuda.empty_cache()

    # CogVideoX
    t, h, w = SIZES["cogvideox-5b"]
    z32 = torch.randn(1, 16, t, h, w, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    ref = None
    cog_settings = [(torch.float32, 2), (torch.bfloat16, 2), (torch.bfloat16, 4), (torch.bfloat16, 13)]
    for dtype, batch in [] if args.wan_only else cog_settings:
        vae = build_vae("cogvideox-5b", dtype)
        vae.num_latent_frames_batch_size = batch
        z = z32.to(dtype)
        seconds, peak, out = time_decode(lambda v=vae, z=z: v.decode(z, return_dict=False)[0], args.repeats)
        out = record("cogvideox-5b", "diffusers loop", dtype, batch, seconds, peak, out, ref)
        ref = out if ref is None else ref
        del vae, z, out
        torch.cuda.empty_cache()

    print("| VAE | setting | dtype | latent frames per call | decode (s) | peak (GiB) | rel. diff vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "setting" not in r:
            continue
        print(
            f"| {r['variant']} | {r['setting']} | {r['dtype']} | {r['chunk']} | {r['seconds']:.2f} "
            f"| {r['peak_gib']:.1f} | {r['rel_err_vs_fp32']:.1e}{'' if r['finite'] else ' NaN!'} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
