"""Time and peak GPU memory of one sparsity-aware TDM distillation step on a full-size model (random weights).

The distiller is the training command's own (``training.distill.Distiller``): the student and fake-score LoRAs
(rank 64) on one frozen base, ASA in the student, gradient checkpointing on, bf16 mixed precision through
accelerate, batch 1 at the family's default video size (or the one given). The prompt embeddings are made by the
random UMT5-XXL through ``training.encode_prompts.encode_to_folder``, as the command does; the text encoder and the
VAE are dropped before training starts, as they are not on the GPU during distillation. The first step is an
untimed warm-up (FlexAttention compiles its kernels for this shape, forward and backward); the next steps are timed
one by one.

    python benchmarks/distill_step.py --variant wan2.2-ti2v-5b --json runs/distill_5b.json --markdown runs/d.md

``--smoke`` runs the same code on the CPU with the family's tiny test models.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

logger = logging.getLogger("distill_step")
PROMPTS = ["a red fox running through fresh snow at sunset", "a sailing boat on a calm lake, morning mist",
           "a busy street market in the rain, neon lights", "a hummingbird drinking from a flower, slow motion"]


def random_bundle(variant: str, smoke: bool):
    """(bundle, size): the full-size random bundle on the GPU, or the family's tiny models for --smoke."""
    from blade_ops.models.variants import get_variant
    from blade_ops.pipeline import DEFAULT_SIZES

    family = get_variant(variant).family
    if smoke:
        from blade_ops.families import get_family
        from blade_ops.models.bundle import ModelBundle
        from blade_ops.models.tiny import tiny_components, tiny_video_size

        fam = get_family(family)
        parts = tiny_components(family)
        experts = {name: parts[name] for name in fam.expert_names}
        bundle = ModelBundle(family=fam, **experts, vae=parts["vae"], text_encoder=parts["text_encoder"],
                             tokenizer=parts["tokenizer"], variant=f"tiny-{family}")
        return bundle, tiny_video_size(family)
    from end_to_end import build_random_bundle

    bundle = build_random_bundle(variant, torch.bfloat16, torch.device("cuda"))
    return bundle, dict(DEFAULT_SIZES[bundle.family.name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="wan2.2-ti2v-5b")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after the warm-up step")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--attention-backend", default="auto")
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU with the tiny test models")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("distill_step.py measures GPU time and memory; no CUDA device is visible (--smoke: CPU).")
    from accelerate import Accelerator

    from training.config import build_config
    from training.distill import Distiller
    from training.encode_prompts import encode_to_folder
    from training.prompts import PromptEmbeddings

    bundle, size = random_bundle(args.variant, args.smoke)
    size.update({k: getattr(args, k) for k in ("width", "height", "frames") if getattr(args, k)})
    cuda = not args.smoke
    work = Path(tempfile.mkdtemp(prefix="blade_distill_bench_"))
    with torch.inference_mode():
        folder = encode_to_folder(bundle, PROMPTS, work / "emb", batch_size=2, shard_size=4,
                                  dtype=torch.float32 if args.smoke else torch.bfloat16)
    bundle.text_encoder = None  # not on the GPU while distilling
    bundle.vae = None
    if cuda:
        torch.cuda.empty_cache()
    values = dict(
        model=args.variant, family=bundle.family.name, prompt_embeddings=str(folder), output_dir=str(work / "out"),
        train_batch_size=1, gradient_accumulation_steps=1, max_train_steps=args.steps + 1, checkpointing_steps=1000,
        validation_steps=0, mixed_precision="no" if args.smoke else "bf16", resume="",
        gradient_checkpointing=not args.no_gradient_checkpointing,
        attention_backend="torch" if args.smoke else args.attention_backend, **size,
    )
    if args.smoke:
        values.update(lora_rank=4, lora_alpha=4, asa_overrides={"block_size": 16, "num_keep": 4})
    config = build_config(values)
    accelerator = Accelerator(cpu=args.smoke, mixed_precision=values["mixed_precision"])
    distiller = Distiller(config, bundle, PromptEmbeddings.open(folder), accelerator)

    def step():
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        log = distiller.train_step()
        if cuda:
            torch.cuda.synchronize()
        return log, time.perf_counter() - start

    _, warmup_s = step()
    logger.info("warm-up step: %.1f s", warmup_s)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rows = []
    for _ in range(args.steps):
        log, seconds = step()
        if not all(map(lambda v: v == v and abs(v) != float("inf"), (log.loss_fake, log.loss_student))):
            raise SystemExit(f"non-finite loss at step {log.step}: fake {log.loss_fake}, student {log.loss_student}")
        rows.append({"step": log.step, "seconds": seconds, "loss_fake": log.loss_fake,
                     "loss_student": log.loss_student, "density": log.density})
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    times = sorted(r["seconds"] for r in rows)
    result = {
        "variant": args.variant, "size": size, "gradient_checkpointing": config.gradient_checkpointing,
        "lora_rank": config.lora_rank, "mixed_precision": config.mixed_precision,
        "batch": config.train_batch_size, "num_steps": config.num_steps,
        "latent_shape": list(distiller.latent_shape), "warmup_s": warmup_s, "steps": rows,
        "median_step_s": times[len(times) // 2], "peak_gib": peak,
        "gpu": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
        "command": "python benchmarks/distill_step.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    md = markdown(result)
    print(md)  # noqa: T201 (benchmark report)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(md)
    return 0


def markdown(r: dict) -> str:
    s = r["size"]
    density = [x["density"] for x in r["steps"] if x["density"] is not None]
    return "\n".join([
        f"{r['variant']}, {s['frames']}x{s['height']}x{s['width']} (latent {'x'.join(map(str, r['latent_shape']))}), "
        f"batch {r['batch']}, LoRA rank {r['lora_rank']}, mixed precision {r['mixed_precision']}, "
        "gradient checkpointing "
        f"{'on' if r['gradient_checkpointing'] else 'off'}, {r['gpu']}, torch {r['torch']}; random weights.",
        "",
        "| warm-up step (s) | step (s), median of timed | timed steps | peak (GiB) | ASA density |",
        "|---|---|---|---|---|",
        f"| {r['warmup_s']:.1f} | {r['median_step_s']:.2f} | {len(r['steps'])} | {r['peak_gib']:.1f} | "
        f"{(sum(density) / len(density)) if density else float('nan'):.3f} |",
        "",
        f"Command: `{r['command']}`",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
