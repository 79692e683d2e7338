"""Speed versus error at the Wan2.1-1.3B self-attention shape: ASA over its knobs against comfy-kitchen's
sol-attn (tau) and sla (top-k), on the same inputs, for two input families.

Shape: B=1, 12 heads, head_dim 128, 81x480x832 -> latent 21x60x104 -> token grid (21, 30, 52) = 32,760 video
tokens (patch (1, 2, 2)), bf16, no text tokens (Wan's text enters through cross-attention only).

Inputs: ``structured_qkv`` of benchmarks/attention.py (seed 0): a smooth random field over (t, h, w) (Gaussian-blurred
noise, sigma 2 tokens in t, 3 in h and w, 32 channels, plus 30% white noise) projected per head to q, k, v; k's
projection is q's plus 50% noise; q is multiplied by a sharpness factor. Two families:

- peaked: sharpness 3.0. ASA's energy rule lands on its lower clamp for most rows (density ~0.06 at the defaults);
- diffuse: sharpness 0.5. The rule lands on its upper clamp (density 0.17): the kept blocks hold ~60% of the mass.

Error: relative Frobenius error ||out - ref|| / ||ref|| against a float32 dense reference (memory-efficient SDPA
on float32 copies of the bf16 inputs), computed once per family; cuDNN's own bf16 error is recorded as the floor.
Speed-up: cuDNN dense SDPA time / method time, both ``triton.testing.do_bench`` medians (warm-up 25 ms, 100 ms
of repetitions) after one untimed call (which compiles FlexAttention per mask layout: once with the global branch,
once without, and the estimate's Triton kernel once per num_keep and precision; about a minute in all).
ASA's time includes everything (curve reorder, estimate, rule, block-mask build, sparse kernel with the global
branch folded in, inverse reorder). sol-attn / sla run ``comfy_kitchen.sol_attn`` on the raster-order tokens as
a BTHD view, as ComfyUI's "Model Sparse Attention" node does (sla = ``topk_ratio``; ``token_aug`` = the node's
``extra_tokens``, default 256 there).

Density: ASA's kept-block fraction (128x128 blocks, from its plan; the global branch adds 1/sample_gap of the
keys on top). For sol-attn / sla the kernel does not report it: the figure is the fraction of 64x64 blocks its
documented routing rule keeps (block-centroid scores against a threshold of tau sigmas, diagonal +-1 always kept;
top-k for sla), replayed in float32 here, so it is approximate (the kernel scores in INT8) and excludes
``token_aug`` tokens and the pooled tail.

GPU command (from the repository root on a CUDA machine; the comfy-kitchen wheel, cp312 manylinux, copied to
build/wheels/ beforehand and carried there)::

    pip install --no-deps --target /tmp/site build/wheels/comfy_kitchen-0.2.40-*.whl && \
    PYTHONPATH=/tmp/site python benchmarks/asa_vs_sol.py --json $OUT/asa_vs_sol.json --md $OUT/asa_vs_sol.md

The default sweep fits in about 4 minutes on an H100 (``--budget-s``: no new point starts after that many
seconds; points run in priority order, both families per point). ``--smoke`` runs the ASA part on the CPU at a
tiny shape with the torch backend (comfy-kitchen is skipped with a logged reason when it cannot run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attention import rel_err, structured_qkv  # noqa: E402

from blade_ops.attention.asa import asa_attention  # noqa: E402
from blade_ops.attention.config import ASAConfig  # noqa: E402

logger = logging.getLogger("bench.asa_vs_sol")

WAN = {"batch": 1, "heads": 12, "grid": (21, 30, 52), "head_dim": 128}
SMOKE = {"batch": 1, "heads": 2, "grid": (4, 16, 16), "head_dim": 128}
FAMILIES = {"peaked": 3.0, "diffuse": 0.5}  # name -> sharpness of structured_qkv

# ASA points: label -> ASAConfig overrides on the Wan preset (min 0.05, max 0.17, sample_gap 30, tau 0.95, S 32).
ASA_POINTS: dict[str, dict] = {
    "defaults": {},
    "no global": {"use_global": False},
    "num_keep 16": {"num_keep": 16},
    "num_keep 64": {"num_keep": 64},
    "estimate bf16": {"estimate_precision": "bf16"},
    "min 0.08": {"min_ratio": 0.08},
    "min 0.08, no global": {"min_ratio": 0.08, "use_global": False},
    "min 0.12": {"min_ratio": 0.12},
    "min 0.12, no global": {"min_ratio": 0.12, "use_global": False},
    "min 0.03": {"min_ratio": 0.03},
    "min 0.03, no global": {"min_ratio": 0.03, "use_global": False},
    "max 0.10": {"max_ratio": 0.10},
    "max 0.25": {"max_ratio": 0.25},
    "min 0.03 max 0.08": {"min_ratio": 0.03, "max_ratio": 0.08},
    "tau 0.9": {"tau": 0.9},
    "tau 0.98": {"tau": 0.98},
    "min 0.03 max 0.08, no global": {"min_ratio": 0.03, "max_ratio": 0.08, "use_global": False},
    "max 0.10, no global": {"max_ratio": 0.10, "use_global": False},
    # estimate_tokens="pooled": block means instead of sampled tokens (more mass kept at equal density on the CPU)
    "pooled estimate": {"estimate_tokens": "pooled"},
    "pooled estimate, no global": {"estimate_tokens": "pooled", "use_global": False},
    "pooled estimate, num_keep 16": {"estimate_tokens": "pooled", "num_keep": 16},
    "pooled estimate, min 0.08, no global": {"estimate_tokens": "pooled", "min_ratio": 0.08, "use_global": False},
    "pooled estimate, max 0.10": {"estimate_tokens": "pooled", "max_ratio": 0.10},
    # global_skips_kept: the global branch leaves out the pooled tokens of the blocks a query row keeps
    "global without kept blocks": {"global_skips_kept": True},
    "global without kept blocks, min 0.03": {"global_skips_kept": True, "min_ratio": 0.03},
    "global without kept blocks, max 0.10": {"global_skips_kept": True, "max_ratio": 0.10},
    "global without kept blocks, pooled estimate": {"global_skips_kept": True, "estimate_tokens": "pooled"},
}
SOL_TAUS = (1.3, 2.0, 0.8, 1.0, 1.6, 2.5, 3.0)  # core's default 1.3 first
SOL_AUG_TAUS = (1.3, 2.0)  # with token_aug 256, the node's default extra_tokens
SLA_RATIOS = (0.10, 0.05, 0.15, 0.20)


def sweep_points(smoke: bool) -> list[tuple[str, str, dict]]:
    """(method, label, params) in priority order: defaults and core's defaults first."""
    asa = [("asa", label, over) for label, over in ASA_POINTS.items()]
    if smoke:
        return [p for p in asa if p[1] in ("defaults", "no global", "num_keep 16", "min 0.12", "pooled estimate",
                                          "global without kept blocks")]
    sol = [("sol-attn", f"tau {t}", {"tau": t, "token_aug": 0}) for t in SOL_TAUS]
    sol += [("sol-attn", f"tau {t}, extra_tokens 256", {"tau": t, "token_aug": 256}) for t in SOL_AUG_TAUS]
    sla = [("sla", f"top-k {r:.2f}", {"topk_ratio": r}) for r in SLA_RATIOS]
    pooled = [p for p in asa if p[1] in ("pooled estimate", "global without kept blocks")]
    head = asa[:2] + pooled + sol[:2] + sla[:1]
    rest = [p for p in asa + sol + sla if p not in head]
    return head + rest


def comfy_kitchen_or_reason(device: torch.device):
    """(module, None) when comfy-kitchen's sol_attn kernel can run on ``device``, else (None, reason)."""
    try:
        import comfy_kitchen as ck
    except Exception as err:  # ImportError, or an OSError from its compiled extension
        return None, f"comfy_kitchen does not import here ({type(err).__name__}: {str(err)[:160]})"
    if not ck.sol_attn_is_available(device):
        return None, f"comfy_kitchen {getattr(ck, '__version__', '?')} has no sol_attn kernel for {device}"
    return ck, None


def _block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """[B, H, L, D] -> [B, H, ceil(L/block), D] float32 means (a ragged last block divides by its length)."""
    b, h, length, d = x.shape
    n = -(-length // block)
    pad = n * block - length
    sums = F.pad(x.float(), (0, 0, 0, pad)).view(b, h, n, block, d).sum(3)
    counts = torch.full((n,), float(block), device=x.device)
    counts[-1] = block - pad
    return sums / counts.view(1, 1, n, 1)


@torch.no_grad()
def sol_routed_fraction(q: torch.Tensor, k: torch.Tensor, tau: float = 0.0, topk_ratio: float = 0.0) -> float:
    """Approximate share of 64x64 blocks sol-attn (or sla with ``topk_ratio``) attends exactly; q, k [B, H, L, D].

    Replays the routing rule its docstring states, in float32: a query block's score for a key block is its
    query centroid against the centred mean key; sol-attn keeps scores above tau standard deviations of that
    proxy row, sla the top ``topk_ratio`` share; the diagonal and its two neighbours are always kept.
    """
    qc, kc = _block_means(q, 64), _block_means(k, 64)
    kc = kc - kc.mean(dim=2, keepdim=True)
    scores = torch.matmul(qc, kc.transpose(-1, -2))  # the common 1/sqrt(d) scale cancels in both rules
    n = scores.shape[-1]
    if topk_ratio > 0:
        count = max(1, min(n - 1, round(topk_ratio * n)))
        kept = scores >= scores.topk(count, dim=-1).values[..., -1:]
    else:
        sigma = torch.sqrt((qc.pow(2) * kc.pow(2).mean(dim=2, keepdim=True)).sum(-1, keepdim=True) + 1e-12)
        kept = scores > tau * sigma
    idx = torch.arange(n, device=q.device)
    kept = kept | ((idx.view(-1, 1) - idx.view(1, -1)).abs() <= 1)
    return float(kept.float().mean())


def _timer(device: torch.device):
    if device.type == "cuda":
        import triton.testing

        def bench(fn) -> float:
            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))

        return bench

    def bench_cpu(fn, reps: int = 3) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    return bench_cpu


def _fp32_reference(q, k, v) -> torch.Tensor:
    qf, kf, vf = q.float(), k.float(), v.float()
    if q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            return F.scaled_dot_product_attention(qf, kf, vf)
    return F.scaled_dot_product_attention(qf, kf, vf)


def _dense_fn(q, k, v):
    if q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def run():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v)

        return run
    return lambda: F.scaled_dot_product_attention(q, k, v)


def make_family(name: str, shape: dict, device, dtype, bench) -> dict:
    """Inputs, fp32 reference and dense timing of one input family."""
    q, k, v = structured_qkv(
        shape["batch"], shape["heads"], shape["grid"], 0, shape["head_dim"], dtype=dtype, device=device,
        sharpness=FAMILIES[name],
    )
    ref = _fp32_reference(q, k, v)
    dense = _dense_fn(q, k, v)
    out = dense()
    return {"q": q, "k": k, "v": v, "ref": ref, "dense_ms": bench(dense), "dense_rel_err": rel_err(out, ref)}


def run_point(method: str, params: dict, fam: dict, shape: dict, backend: str, ck, bench) -> dict:
    """One sweep point on one family: time, error, density."""
    q, k, v = fam["q"], fam["k"], fam["v"]
    if method == "asa":
        cfg = ASAConfig.for_family("wan", **params)
        plans: list = []

        def fn():
            return asa_attention(q, k, v, grid=shape["grid"], num_text_tokens=0, config=cfg, backend=backend)

        t0 = time.time()
        out = asa_attention(q, k, v, grid=shape["grid"], num_text_tokens=0, config=cfg, backend=backend,
                            plan_out=plans)
        first_s = time.time() - t0
        density = float(plans[0].selection.density())
        extra = {"global_mode": plans[0].global_mode, "config": cfg.to_dict()}
    else:
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # BTHD views, as the ComfyUI node passes them
        kw = {"tau": params.get("tau", 1.0), "topk_ratio": params.get("topk_ratio", 0.0),
              "token_aug": params.get("token_aug", 0)}

        def fn():
            return ck.sol_attn(qt, kt, vt, **kw)

        t0 = time.time()
        out = fn().transpose(1, 2)
        first_s = time.time() - t0
        density = sol_routed_fraction(q, k, kw["tau"], kw["topk_ratio"])
        extra = {"kwargs": kw, "density_note": "approximate (float32 replay of the routing rule)"}
    if q.is_cuda:
        torch.cuda.synchronize()
    if not torch.isfinite(out).all():
        raise RuntimeError(f"{method} {params} produced non-finite values")
    ms = bench(fn)
    return {"ms": ms, "speedup": fam["dense_ms"] / ms, "rel_err": rel_err(out, fam["ref"]), "density": density,
            "first_call_s": first_s, **extra}


def check_pooled_estimate(device: torch.device) -> dict:
    """The pooled-row estimate through the fused kernel (bf16 and, where supported, fp8) vs the torch reference."""
    from blade_ops.attention.estimate import estimate_block_importance, pool_block_rows

    torch.manual_seed(1)
    q, k = (torch.randn(1, 2, 5000, 128, device=device, dtype=torch.bfloat16) for _ in range(2))
    out = {}
    for s in (16, 32):
        qp, kp = pool_block_rows(q, s, 128), pool_block_rows(k, s, 128)
        rows = torch.arange(s, device=device, dtype=torch.int32).expand(1, 2, s).contiguous()
        for precision in ("bf16", "fp8"):
            try:
                ref = estimate_block_importance(qp, kp, rows, s, scale=128 ** -0.5, impl="torch", precision=precision)
                got = estimate_block_importance(qp, kp, rows, s, scale=128 ** -0.5, impl="triton",
                                                precision=precision)
                out[f"pooled_S{s}_{precision}_max_rel_err"] = float((got - ref).abs().max() / ref.abs().max())
            except Exception as err:  # fp8 on a GPU without fp8 tensor cores
                out[f"pooled_S{s}_{precision}_error"] = repr(err)[:160]
    logger.info("pooled estimate checks: %s", out)
    return out


def pareto(points: list[dict]) -> list[dict]:
    """Points no other point beats in both speed-up and error, fastest first."""
    front = [p for p in points if not any(
        o["speedup"] >= p["speedup"] and o["rel_err"] <= p["rel_err"] and o is not p
        and (o["speedup"] > p["speedup"] or o["rel_err"] < p["rel_err"]) for o in points)]
    return sorted(front, key=lambda p: -p["speedup"])


def compare(rows: list[dict], ours: str = "asa") -> list[dict]:
    """For each point of another method: ASA's least error among its points at least as fast."""
    mine = [r for r in rows if r["method"] == ours]
    out = []
    for r in rows:
        if r["method"] == ours:
            continue
        faster = [m for m in mine if m["speedup"] >= r["speedup"]]
        best = min(faster, key=lambda m: m["rel_err"]) if faster else None
        out.append({
            "method": r["method"], "label": r["label"], "speedup": r["speedup"], "rel_err": r["rel_err"],
            "asa_label": best["label"] if best else None, "asa_speedup": best["speedup"] if best else None,
            "asa_rel_err": best["rel_err"] if best else None,
            "asa_below": bool(best and best["rel_err"] < r["rel_err"]),
        })
    return out


def render_markdown(results: dict) -> str:
    env = results["env"]
    lines = [
        "## ASA against sol-attn and sla (speed versus error)",
        "",
        f"Command: `{results['command']}`  ",
        f"Device: {env['device']}; torch {env['torch']}; comfy-kitchen {env.get('comfy_kitchen', 'n/a')}; "
        f"date {env['date']}. Shape {results['shape']}, {env['dtype']}. Inputs and definitions: the docstring of "
        "benchmarks/asa_vs_sol.py. Error: relative Frobenius error vs a float32 dense reference.",
        "",
    ]
    if results.get("comfy_kitchen_skipped"):
        lines += [f"comfy-kitchen skipped: {results['comfy_kitchen_skipped']}", ""]
    for fam, fr in results["families"].items():
        lines += [
            f"### {fam} (sharpness {FAMILIES[fam]}): dense SDPA {fr['dense_ms']:.2f} ms, its {env['dtype']} error "
            f"{fr['dense_rel_err']:.4f}",
            "",
            "| method | setting | ms | speed-up | rel. error | density | on the front |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        ok = [r for r in fr["points"] if "error" not in r]
        rows = sorted(ok, key=lambda r: (r["method"], -r["speedup"])) + [r for r in fr["points"] if "error" in r]
        fronts = {m: {id(p) for p in pareto([r for r in ok if r["method"] == m])} for m in {r["method"] for r in ok}}
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['method']} | {r['label']} | failed: {r['error'][:80]} | | | | |")
                continue
            approx = "~" if r["method"] != "asa" else ""
            timed = r["ms"] == r["ms"]  # NaN: a --cpu-errors run, which times nothing
            ms, speedup = (f"{r['ms']:.2f}", f"{r['speedup']:.2f}x") if timed else ("-", "-")
            front = ("yes" if id(r) in fronts[r["method"]] else "") if timed else "-"
            lines.append(
                f"| {r['method']} | {r['label']} | {ms} | {speedup} | {r['rel_err']:.4f} | "
                f"{approx}{r['density']:.3f} | {front} |"
            )
        cmp_rows = fr.get("compare", [])
        if cmp_rows:
            below = sum(c["asa_below"] for c in cmp_rows)
            lines += ["", f"ASA below the other methods (an ASA point at least as fast with less error): "
                          f"{below} of {len(cmp_rows)} points.", ""]
            for c in cmp_rows:
                asa = ("no ASA point this fast" if c["asa_label"] is None else
                       f"ASA '{c['asa_label']}' {c['asa_speedup']:.2f}x @ {c['asa_rel_err']:.4f}")
                lines.append(f"- {c['method']} {c['label']}: {c['speedup']:.2f}x @ {c['rel_err']:.4f}; {asa}"
                             f"{' (below)' if c['asa_below'] else ''}")
        lines.append("")
    if results.get("skipped"):
        lines.append(f"Skipped for the time budget: {', '.join(results['skipped'])}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shape, torch backend, ASA only")
    parser.add_argument("--cpu-errors", action="store_true",
                        help="CPU, the Wan shape with one head, float32, torch backend, ASA only: errors and "
                             "densities, no timing (about 13 GB of memory per point)")
    parser.add_argument("--points", default=None, help="ASA point labels to run, separated by ';' (default: all)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="start no new point after this many seconds")
    parser.add_argument("--families", default="peaked,diffuse", help="comma list of " + ", ".join(FAMILIES))
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "asa_vs_sol.json"))
    parser.add_argument("--md", default=None, help="also write the markdown table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t_start = time.time()
    wanted = {p.strip() for p in args.points.split(";")} if args.points else None
    if wanted and wanted - set(ASA_POINTS):
        raise SystemExit(f"--points names unknown ASA points {sorted(wanted - set(ASA_POINTS))}; valid: "
                         f"{list(ASA_POINTS)}")
    if args.smoke:
        device, dtype, shape, backend = torch.device("cpu"), torch.float32, SMOKE, "torch"
    elif args.cpu_errors:
        device, dtype, shape, backend = torch.device("cpu"), torch.float32, {**WAN, "heads": 1}, "torch"
    else:
        if not torch.cuda.is_available():
            raise RuntimeError("benchmarks/asa_vs_sol.py needs a CUDA GPU (or --smoke for the CPU check).")
        device, dtype, shape, backend = torch.device("cuda"), torch.bfloat16, WAN, "flex"
    cpu = args.smoke or args.cpu_errors
    bench = (lambda fn: float("nan")) if args.cpu_errors else _timer(device)  # CPU times at this shape mean nothing
    ck, reason = (None, "CPU runs are ASA only") if cpu else comfy_kitchen_or_reason(device)
    if reason:
        logger.warning("comfy-kitchen skipped: %s", reason)
    length = shape["grid"][0] * shape["grid"][1] * shape["grid"][2]
    results: dict = {
        "command": "python benchmarks/asa_vs_sol.py " + " ".join(sys.argv[1:]),
        "shape": [shape["batch"], shape["heads"], length, shape["head_dim"]],
        "grid": list(shape["grid"]),
        "env": {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
                "date": datetime.date.today().isoformat()},
        "comfy_kitchen_skipped": reason,
        "families": {},
        "skipped": [],
    }
    if ck is not None:
        results["env"]["comfy_kitchen"] = getattr(ck, "__version__", "?")
    if device.type == "cuda":
        results["checks"] = check_pooled_estimate(device)
    fams = {}
    for name in args.families.split(","):
        fams[name] = make_family(name, shape, device, dtype, bench)
        results["families"][name] = {"sharpness": FAMILIES[name], "dense_ms": fams[name]["dense_ms"],
                                     "dense_rel_err": fams[name]["dense_rel_err"], "points": []}
        logger.info("%s: dense %.2f ms, bf16 error %.4f", name, fams[name]["dense_ms"], fams[name]["dense_rel_err"])
    for method, label, params in sweep_points(args.smoke):
        if (method != "asa" and ck is None) or (wanted and label not in wanted):
            continue
        if time.time() - t_start > args.budget_s:
            results["skipped"].append(f"{method} {label}")
            continue
        for name, fam in fams.items():
            row = {"method": method, "label": label, "params": params}
            try:
                row.update(run_point(method, params, fam, shape, backend, ck, bench))
                logger.info("%-8s %-8s %-32s %6.2f ms %5.2fx err %.4f density %.3f", name, method, label, row["ms"],
                            row["speedup"], row["rel_err"], row["density"])
            except Exception as err:  # one failing point must not lose the sweep; the JSON records it
                logger.exception("%s %s %s failed", name, method, label)
                row["error"] = repr(err)[:300]
            results["families"][name]["points"].append(row)
        _save(results, args.json)
    for fr in results["families"].values():
        ok = [r for r in fr["points"] if "error" not in r]
        fr["pareto"] = {m: [r["label"] for r in pareto([r for r in ok if r["method"] == m])]
                        for m in sorted({r["method"] for r in ok})}
        fr["compare"] = compare(ok)
    results["wall_s"] = time.time() - t_start
    _save(results, args.json)
    md = render_markdown(results)
    logger.info("\n%s", md)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(md)


def _save(results: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
