"""block_sparse_attn (mit-han-lab's CUDA kernels) beside flex (compiled FlexAttention) at the Wan2.1 and CogVideoX
shapes, bf16, forward and forward+backward.

Run on a CUDA machine from the repository root, with the package importable::

    python benchmarks/block_sparse_backends.py --write-docs --library-commit SHA --build-seconds S

"kernel" rows time one backend call (q, k, v, block mask -> out, lse; each backend's mask conversion included)
at the mask ASA's rule makes on the structured inputs of benchmarks/attention.py (``ASA rule``) and at random
masks keeping a fixed share of every query-block row's key blocks (the diagonal block among them). "ASA" rows time
``asa_attention`` end to end at the rule's mask: flex folds the pooled global tokens into its call, block_sparse_attn
(no key bias) merges a second pooled-token attention through the LSE. Times are ``triton.testing.do_bench`` medians.
``--backends flex`` runs without the package (and warms the compile caches).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.attention import rel_err, structured_qkv  # noqa: E402
from blade_ops.attention.asa import asa_attention  # noqa: E402
from blade_ops.attention.backends import get_backend  # noqa: E402
from blade_ops.attention.backends.flex import compile_limit_context  # noqa: E402
from blade_ops.attention.config import ASAConfig  # noqa: E402

logger = logging.getLogger("bench.block_sparse_backends")

SHAPES = {
    # name: (batch, heads, grid, text tokens, head dim) -> [1, 12, 32760, 128] and [1, 48, 17776, 64]
    "wan": (1, 12, (21, 30, 52), 0, 128),
    "cogvideox": (1, 48, (13, 30, 45), 226, 64),
}
FIXED_DENSITIES = (0.05, 0.10, 0.17)
SECTION = "## block_sparse_attn beside flex"


def _bench(fn, warmup: int, rep: int) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def fixed_density_mask(b: int, h: int, nqb: int, nkb: int, density: float, device, seed: int = 0) -> torch.Tensor:
    """[b, h, nqb, nkb] bool keeping round(density * nkb) (at least 1) random key blocks per row, diagonal first."""
    g = torch.Generator(device=device).manual_seed(seed)
    keep = max(1, round(density * nkb))
    score = torch.rand(b, h, nqb, nkb, device=device, generator=g)
    rows = torch.arange(nqb, device=device)
    score[..., rows, rows.clamp_max(nkb - 1)] = 2.0
    idx = score.topk(keep, dim=-1).indices
    return torch.zeros_like(score, dtype=torch.bool).scatter_(-1, idx, True)


def bench_shape(name: str, args, results: dict) -> None:
    b, h, grid, nt, d = SHAPES[name]
    cfg = ASAConfig.for_family(name)
    q, k, v = structured_qkv(b, h, grid, nt, d)
    length = q.shape[2]
    nb = -(-length // 128)
    scale = 1.0 / math.sqrt(d)
    r = results.setdefault(name, {"shape": [b, h, length, d], "config": cfg.to_dict(), "kernel": {}, "asa": {}})
    do = torch.randn_like(q)
    plans: list = []
    # the rule's selection does not depend on the backend (it is made before the kernel call)
    asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg, backend=args.backends[0], plan_out=plans)
    rule = plans[0].selection.dense
    masks = {"ASA rule": rule}
    for dens in FIXED_DENSITIES:
        masks[f"{round(100 * dens)}%"] = fixed_density_mask(b, h, nb, nb, dens, q.device)
    qg, kg, vg = (x.detach().requires_grad_() for x in (q, k, v))
    outs = {}
    for backend in args.backends:
        fn = get_backend(backend, q.device).fn
        for mname, mask in masks.items():
            row = r["kernel"].setdefault(mname, {"density": float(mask.float().mean())})

            def fwd(fn=fn, mask=mask):
                return fn(q, k, v, mask, 128, scale)

            def fwd_bwd(fn=fn, mask=mask):
                out, _ = fn(qg, kg, vg, mask, 128, scale)
                return torch.autograd.grad(out, (qg, kg, vg), do)

            with compile_limit_context():
                if mname == "ASA rule":
                    outs[backend] = (fwd()[0], fwd_bwd())
                row[f"{backend}_fwd_ms"] = _bench(fwd, args.warmup, args.rep)
                row[f"{backend}_fwdbwd_ms"] = _bench(fwd_bwd, args.warmup, args.rep)
            logger.info("%s kernel %s %s: %s", name, backend, mname, row)
            _save(results, args)
        # ASA end to end at the rule's mask
        def asa_fwd(backend=backend):
            return asa_attention(q, k, v, grid=grid, num_text_tokens=nt, config=cfg, backend=backend)

        def asa_fwd_bwd(backend=backend):
            out = asa_attention(qg, kg, vg, grid=grid, num_text_tokens=nt, config=cfg, backend=backend)
            return torch.autograd.grad(out, (qg, kg, vg), do)

        with compile_limit_context():
            asa_fwd_bwd()
            r["asa"][f"{backend}_fwd_ms"] = _bench(asa_fwd, args.warmup, args.rep)
            r["asa"][f"{backend}_fwdbwd_ms"] = _bench(asa_fwd_bwd, args.warmup, args.rep)
        r["asa"]["density"] = float(rule.float().mean())
        logger.info("%s ASA %s: %s", name, backend, r["asa"])
        _save(results, args)
    if len(outs) == 2:  # the two kernels on the rule's mask: output and gradients
        (o1, g1), (o2, g2) = outs["block_sparse_attn"], outs["flex"]
        r["block_sparse_attn_vs_flex_out_rel_err"] = rel_err(o1, o2)
        r["block_sparse_attn_vs_flex_grad_rel_err"] = max(rel_err(a, c) for a, c in zip(g1, g2, strict=True))
    _save(results, args)


def _save(results: dict, args) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


def render_markdown(results: dict, command: str) -> str:
    env = results.get("env", {})
    lines = [
        SECTION,
        "",
        f"Command: `{command}`  ",
        f"Device: {env.get('device')}; torch {env.get('torch')}, CUDA {env.get('cuda')}; block_sparse_attn "
        f"{env.get('library_version')} built from mit-han-lab/Block-Sparse-Attention commit "
        f"{env.get('library_commit')} ({env.get('build_note')}; build {env.get('build_seconds')} s); date "
        f"{env.get('date')}.",
        "",
        "bf16, the structured inputs of the Attention section. kernel: one backend call (each backend's block-mask "
        "conversion included); ASA: `asa_attention` end to end at the rule's mask (flex folds the global branch into "
        "its call; block_sparse_attn has no key bias, so ASA merges a second pooled-token attention by LSE). Times "
        "are `triton.testing.do_bench` medians in ms.",
        "",
        "| shape | what | density | flex fwd | block_sparse_attn fwd | flex f+b | block_sparse_attn f+b |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def f(x):
        return "n/a" if x is None else f"{x:.2f}"

    for name in SHAPES:
        r = results.get(name)
        if not r:
            continue
        shp = "x".join(str(s) for s in r["shape"])
        rows = [(f"kernel, {m}", row) for m, row in r.get("kernel", {}).items()]
        if r.get("asa"):
            rows.append(("ASA end to end", r["asa"]))
        for what, row in rows:
            lines.append(
                f"| {name} {shp} | {what} | {row.get('density', float('nan')):.3f} | {f(row.get('flex_fwd_ms'))} | "
                f"{f(row.get('block_sparse_attn_fwd_ms'))} | {f(row.get('flex_fwdbwd_ms'))} | "
                f"{f(row.get('block_sparse_attn_fwdbwd_ms'))} |"
            )
    errs = [
        f"{name}: output {r['block_sparse_attn_vs_flex_out_rel_err']:.1e}, gradients "
        f"{r['block_sparse_attn_vs_flex_grad_rel_err']:.1e}"
        for name in SHAPES
        if "block_sparse_attn_vs_flex_out_rel_err" in (r := results.get(name, {}))
    ]
    if errs:
        lines += ["", "The two kernels on the rule's mask (relative L2 difference): " + "; ".join(errs) + "."]
    return "\n".join(lines) + "\n"


def write_docs_section(md: str, path: Path) -> None:
    """Replace (or append) this section of ``path``, leaving the other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + md
    else:
        nxt = text.find("\n## ", start + 1)
        text = text[:start] + md.rstrip("\n") + "\n" + ("\n" + text[nxt + 1 :] if nxt >= 0 else "")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="wan,cogvideox", help="comma list of " + ", ".join(SHAPES))
    parser.add_argument("--backends", default="flex,block_sparse_attn", help="comma list of backends to time")
    parser.add_argument("--warmup", type=int, default=20, help="do_bench warm-up, ms")
    parser.add_argument("--rep", type=int, default=80, help="do_bench repetitions, ms")
    parser.add_argument("--library-commit", default="unknown", help="Block-Sparse-Attention commit, for the docs")
    parser.add_argument("--build-seconds", default="unknown", help="its build time, for the docs")
    parser.add_argument("--build-note", default="archs and kernels not stated", help="what the build holds")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "block_sparse_backends.json"))
    parser.add_argument("--write-docs", action="store_true", help="update this section of docs/BENCHMARKS.md")
    parser.add_argument("--render", default=None, help="only render a results JSON into docs/BENCHMARKS.md")
    args = parser.parse_args()
    args.backends = args.backends.split(",")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    docs = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
    if args.render:
        results = json.loads(Path(args.render).read_text())
        render = f"python benchmarks/block_sparse_backends.py --render {Path(args.render).name}"
        write_docs_section(render_markdown(results, f"{results['command']}`, then `{render}"), docs)
        return
    if not torch.cuda.is_available():
        raise RuntimeError("benchmarks/block_sparse_backends.py needs a CUDA GPU.")
    version = None
    if "block_sparse_attn" in args.backends:
        import block_sparse_attn

        version = block_sparse_attn.__version__
    results = {
        "command": "python benchmarks/block_sparse_backends.py " + " ".join(sys.argv[1:]),
        "env": {
            "device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "date": datetime.date.today().isoformat(), "library_version": version,
            "library_commit": args.library_commit, "build_seconds": args.build_seconds, "build_note": args.build_note,
        },
    }
    for name in args.shapes.split(","):
        try:
            bench_shape(name, args, results)
        except Exception as err:
            logger.exception("benchmark %s failed", name)
            results.setdefault(name, {})["error"] = repr(err)[:500]
        _save(results, args)
        torch.cuda.empty_cache()
    md = render_markdown(results, results["command"])
    logger.info("\n%s", md)
    if args.write_docs:
        write_docs_section(md, docs)


if __name__ == "__main__":
    main()
