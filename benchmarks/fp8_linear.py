"""fp8 (e4m3) linear layers (blade_ops/models/fp8_linear.py) on one GPU: what they cost in accuracy and gain in speed.

1. Wan2.1-1.3B with random weights of the shipped config, bf16, at 81x480x832 (latent 21x60x104, batch 1, 512 random
   text embeddings): the relative error ||y_fp8 - y_bf16|| / ||y_bf16|| of one transformer pass, dense and with ASA
   installed as the blade preset does (the ASA rows compare fp8 against bf16 both with ASA: its block selection may
   differ between them), plus the bf16 and fp8 passes against a float32 pass of the same (bf16-rounded) weights;
   and the time per transformer forward with and without fp8, dense and with ASA (eager unless ``--compile``, which
   compiles each block for every row; the warm-up then pays for compiling).
2. The toy domain (training/toy: the shipped toy teacher and BLADE LoRA, the metric's classifier trained afresh as
   ``training.toy.run_all`` does): prompt match and FD of the BLADE student (8 steps, ASA + LoRA, blade sampler) in
   float32 (RESULTS.md's setting), bf16 and bf16 + fp8 linears, and of the teacher's 50-step CFG baseline in bf16
   with and without fp8 linears. All rows share one classifier, so their FDs compare with each other only.

The GPU run (about 2-3 minutes on an H100, model building, FlexAttention's compile and the classifier included):

    python benchmarks/fp8_linear.py --json runs/fp8_linear.json --markdown runs/fp8_linear.md

``--smoke`` runs the same code on the CPU at toy sizes (a width-32 Wan, a few steps; torch's CPU ``_scaled_mm``
emulates the e4m3 products), to check the script before GPU time:

    python benchmarks/fp8_linear.py --smoke --json /tmp/fp8_smoke.json --markdown /tmp/fp8_smoke.md
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from blade_ops.attention import ASAConfig, get_asa_handle  # noqa: E402
from blade_ops.families import WAN  # noqa: E402
from blade_ops.models.fp8_linear import check_fp8_device, install_fp8_linears  # noqa: E402
from blade_ops.models.variants import random_model  # noqa: E402
from blade_ops.pipeline.compile import compile_transformer  # noqa: E402
from blade_ops.prepare import AsaRequest, prepare_transformer  # noqa: E402

logger = logging.getLogger("fp8_linear")

VARIANT = "wan2.1-t2v-1.3b"
TOY = ROOT / "training" / "toy" / "assets"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def build_transformer(smoke: bool, device: torch.device) -> torch.nn.Module:
    """Wan2.1-1.3B's transformer with random weights in bf16 (the modules diffusers keeps in float32 stay so), or
    with ``smoke`` the tiny Wan at width 32 (every block linear a multiple of 16) in float32 on the CPU."""
    import diffusers
    from end_to_end import _cast

    torch.manual_seed(0)
    if smoke:
        return diffusers.WanTransformer3DModel(**{**WAN.tiny_transformer_config(), "attention_head_dim": 16}).eval()
    with torch.device(device):
        model = random_model(VARIANT, "transformer")
    return _cast(model, torch.bfloat16).eval()


def transformer_inputs(model: torch.nn.Module, smoke: bool, device: torch.device, dtype: torch.dtype) -> dict:
    """Latents [1, 16, 21, 60, 104] (81x480x832), timestep 500, 512 random text embeddings (smoke: 1x16x3x8x8, 8)."""
    g = torch.Generator().manual_seed(1)
    latent = (1, 16, 3, 8, 8) if smoke else (1, 16, 21, 60, 104)
    text = 8 if smoke else 512
    return dict(
        hidden_states=torch.randn(latent, generator=g).to(device, dtype),
        timestep=torch.tensor([500.0], device=device),
        encoder_hidden_states=torch.randn(1, text, model.config.text_dim, generator=g).to(device, dtype),
        return_dict=False,
    )


@torch.no_grad()
def transformer_rows(args, device: torch.device) -> dict:
    """Relative errors and forward times of the full-size (or smoke) transformer, dense and with ASA."""
    model = build_transformer(args.smoke, device)
    dtype = next(p.dtype for n, p in model.named_parameters() if n.startswith("blocks.0.attn1"))
    inputs = transformer_inputs(model, args.smoke, device, dtype)
    asa = AsaRequest(WAN.name, ASAConfig.for_family(WAN.name), args.asa_backend, source="family")
    out: dict = {"tokens": int(inputs["hidden_states"][0, 0].numel() // 4), "dtype": str(dtype), "rows": []}

    def run(label: str, with_asa: bool, fp8: bool) -> torch.Tensor:
        prepared = prepare_transformer(model, asa=asa if with_asa else None)
        handle = install_fp8_linears(model, device=device, allow_cpu=args.smoke) if fp8 else None
        swapped, kept = (len(handle.names), dict(handle.kept)) if handle is not None else (0, {})
        try:
            if args.compile:
                compile_transformer(model)
            start = time.perf_counter()
            y = model(**inputs)[0]  # warm-up: FlexAttention's (and --compile's) compile, the allocator
            _sync(device)
            warm = time.perf_counter() - start
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model(**inputs)
                _sync(device)
                times.append(time.perf_counter() - start)
            asa_handle = get_asa_handle(model)
            density = asa_handle.stats.mean_density if asa_handle is not None else None
        finally:
            if handle is not None:
                handle.restore()
            prepared.undo()
        row = {"label": label, "asa": with_asa, "fp8": fp8, "seconds_median": statistics.median(times),
               "seconds_all": times, "warm_up_seconds": warm, "asa_density": density,
               "fp8_layers": swapped, "fp8_kept": kept}
        out["rows"].append(row)
        logger.info("%s: %.4f s per forward (warm-up %.1f s)", label, row["seconds_median"], warm)
        return y

    dense = run("dense bf16", False, False)
    dense_fp8 = run("dense fp8 linears", False, True)
    sparse = run("ASA bf16", True, False)
    sparse_fp8 = run("ASA fp8 linears", True, True)
    for y in (dense, dense_fp8, sparse, sparse_fp8):
        if not torch.isfinite(y).all():
            raise RuntimeError("a transformer pass produced NaN or Inf")
    errors = {
        "dense: fp8 vs bf16": _rel(dense_fp8, dense),
        "ASA: fp8 vs bf16": _rel(sparse_fp8, sparse),
        "ASA bf16 vs dense bf16 (for scale)": _rel(sparse, dense),
    }
    # float32 pass of the same weights (bf16-rounded), TF32 off: how far bf16 itself already is
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        model.float()
        reference = model(**{**inputs, "hidden_states": inputs["hidden_states"].float(),
                             "encoder_hidden_states": inputs["encoder_hidden_states"].float()})[0]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    errors["dense: bf16 vs fp32"] = _rel(dense, reference)
    errors["dense: fp8 vs fp32"] = _rel(dense_fp8, reference)
    out["relative_errors"] = errors
    for key, value in errors.items():
        logger.info("relative error, %s: %.4f", key, value)
    del reference  # the model goes with this function (and its closure)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def toy_rows(args, device: torch.device) -> dict:
    """Prompt match and FD of the toy student and teacher with and without fp8 linears (one classifier)."""
    from blade_ops.text import encode_text
    from training.toy.domain import all_prompts
    from training.toy.evaluate import Setting, evaluate
    from training.toy.metric import train_classifier
    from training.toy.model import load_toy_bundle
    from training.toy.run_all import toy_asa

    lora = str(TOY / "toy_blade_lora.safetensors")
    cfg = 3.0  # the shipped teacher's CFG scale (RESULTS.md: picked by the 50-step search)
    teacher_steps = 4 if args.smoke else 50
    rows: list = []
    classifier = None
    for dtype, settings in (
        (torch.float32, [Setting("student fp32 (RESULTS.md's setting)", "blade", 8, 1.0, asa=True, lora=lora)]),
        (torch.bfloat16, [
            Setting("student bf16", "blade", 8, 1.0, asa=True, lora=lora),
            Setting("student bf16 + fp8 linears", "blade", 8, 1.0, asa=True, lora=lora, fp8_linears=True),
            Setting(f"teacher {teacher_steps}-step CFG {cfg:g} bf16", "baseline", teacher_steps, cfg),
            Setting(f"teacher {teacher_steps}-step CFG {cfg:g} bf16 + fp8 linears", "baseline", teacher_steps, cfg,
                    fp8_linears=True),
        ]),
    ):
        bundle, spec = load_toy_bundle(TOY / "toy-wan", device=device, dtype=dtype)
        geometry = spec.geometry
        if classifier is None:
            start = time.perf_counter()
            classifier, real = train_classifier(geometry, steps=args.classifier_steps, device=str(device))
            logger.info("classifier: %d steps in %.0f s, real-clip prompt match %.4f", args.classifier_steps,
                        time.perf_counter() - start, real)
        text = encode_text(bundle, all_prompts()[: args.toy_prompts]).to(device)  # the first N keep their labels
        empty = encode_text(bundle, [""]).to(device)
        asa_config = ASAConfig.for_family(WAN, **toy_asa(spec))
        scores, _ = evaluate(bundle, text, empty, settings, classifier, geometry, asa_config,
                             repeats=args.toy_repeats, backend=args.asa_backend)
        rows += [asdict(s) for s in scores]
    return {"classifier_steps": args.classifier_steps, "repeats": args.toy_repeats, "prompts": args.toy_prompts,
            "rows": rows}


def render_markdown(results: dict) -> str:
    t = results["transformer"]
    lines = [
        f"## fp8 (e4m3) linear layers: {results['model']}", "",
        f"Device: {results['device']}, torch {results['torch']}; {results['date']}. Command: `{results['command']}`",
        "", f"One transformer pass ({t['tokens']} video tokens, {t['dtype']}), relative error of the output:", "",
        "| comparison | relative error |", "|---|---|",
        *[f"| {k} | {v:.4f} |" for k, v in t["relative_errors"].items()],
        "", f"Time per transformer forward ({'blocks compiled' if results['args']['compile'] else 'eager'}, median "
        f"of {results['args']['repeats']}):", "",
        "| attention | linear layers | s / forward | speed-up vs bf16 | ASA density |", "|---|---|---|---|---|",
    ]
    base = {r["asa"]: r["seconds_median"] for r in t["rows"] if not r["fp8"]}
    for r in t["rows"]:
        density = f"{r['asa_density']:.3f}" if r["asa_density"] is not None else "-"
        lines.append(f"| {'ASA' if r['asa'] else 'dense'} | {'fp8 e4m3' if r['fp8'] else 'bf16'} | "
                     f"{r['seconds_median']:.4f} | {base[r['asa']] / r['seconds_median']:.2f}x | {density} |")
    fp8_rows = [r for r in t["rows"] if r["fp8"]]
    if fp8_rows:
        lines += ["", f"fp8 layers: {fp8_rows[0]['fp8_layers']} (kept: {len(fp8_rows[0]['fp8_kept'])})."]
    toy = results.get("toy")
    if toy:
        lines += ["", f"Toy domain ({toy['prompts']} prompts x {toy['repeats']} samples, one classifier of "
                  f"{toy['classifier_steps']} steps for all rows; compare FD inside this table only):", "",
                  "| setting | prompt match | FD | seconds |", "|---|---|---|---|"]
        lines += [f"| {r['label']} | {r['prompt_match']:.4f} | {r['fd']:.1f} | {r['seconds']:.1f} |"
                  for r in toy["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="results file (JSON)")
    parser.add_argument("--markdown", required=True, help="table file (markdown)")
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes: checks the script, measures nothing")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards per row (default 5; smoke 1)")
    parser.add_argument("--compile", action="store_true", help="compile each transformer block in every row")
    parser.add_argument("--no-toy", action="store_true", help="skip the toy domain's quality rows")
    parser.add_argument("--classifier-steps", type=int, default=None, help="default 1500 as run_all (smoke 5)")
    parser.add_argument("--toy-repeats", type=int, default=None, help="samples per prompt (default 8; smoke 1)")
    parser.add_argument("--toy-prompts", type=int, default=None, help="the first N of the 108 prompts (smoke 4)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.repeats = args.repeats or (1 if args.smoke else 5)
    args.classifier_steps = args.classifier_steps or (5 if args.smoke else 1500)
    args.toy_repeats = args.toy_repeats or (1 if args.smoke else 8)
    args.toy_prompts = args.toy_prompts or (4 if args.smoke else 108)
    args.asa_backend = "torch" if args.smoke else "auto"
    device = torch.device("cpu" if args.smoke else "cuda")
    if not args.smoke:
        check_fp8_device(device)  # names the requirement when this GPU has no fp8 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = {
        "model": "tiny Wan (smoke)" if args.smoke else f"{VARIANT}, random weights, 81x480x832",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "args": vars(args),
        "command": "python benchmarks/fp8_linear.py " + shlex.join(sys.argv[1:] if argv is None else argv),
    }
    results["transformer"] = transformer_rows(args, device)
    if not args.no_toy:
        results["toy"] = toy_rows(args, device)
    for path, text in ((args.json, json.dumps(results, indent=1, default=str)), (args.markdown,
                                                                               render_markdown(results))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    logger.info("wrote %s and %s", args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
