"""The whole toy experiment in one command: teacher, metric, data-free BLADE distillation, evaluation.

    python -m training.toy.run_all --output outputs/toy [--small] [--teacher-steps N] [--distill-steps N]

1. Train the toy teacher by flow matching (training/toy/train_teacher.py) and save it.
2. Train the metric's classifier on rendered clips.
3. Pick the teacher's CFG scale: the best 50-step score over a few scales.
4. Pre-encode the 108 prompts (prompts only: no clip is used from here on) and distil a BLADE LoRA with
   training.distill (student + ASA, fake score, dense CFG teacher).
5. Score: teacher 50 steps + CFG; teacher 8 steps + CFG; teacher 8 steps + CFG + training-free ASA; the student
   before distillation (teacher 8 steps + ASA without CFG, tdm sampler); BLADE student 8 steps + ASA without CFG
   (the "blade" sampler the nodes use, and the "tdm" sampler it trained with); plus the share of the dense
   attention mass that ASA's blocks keep on the trained teacher.
``--no-distill-asa`` distils and scores a dense student (the ablation that separates sparsity from distillation);
``--distill-benchmark 32,64,128`` only times distillation steps per batch size.
Writes results.json and results.md under --output.

A long distillation can be split over several calls (each under a time limit): give every call the same
``--distill-dir`` (checkpoints and student LoRA snapshots) and ``--fixed-steps --distill-steps N`` (the cosine
schedule spans all N steps). A call resumes from the newest complete checkpoint there, trains until N, its
``--distill-budget`` or ``--distill-stop-at``, and writes a checkpoint; only the call that reaches N trains the
classifier and evaluates, and it also scores every snapshot (``--lora-every`` steps and each call's end) with the
same classifier: the learning curve. ``--evaluate-snapshots`` scores the snapshots already in ``--distill-dir``
without distilling (a run cut short: its newest snapshot is the student), and ``--compare-snapshots DIR`` scores
another run's snapshots with the same classifier, so two learning curves share one metric.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from blade_ops.attention import ASAConfig
from blade_ops.families import WAN
from blade_ops.text import encode_text

from ..checkpoint import resolve_resume
from ..config import build_config
from ..distill import Distiller, train
from ..encode_prompts import encode_to_folder
from ..prompts import PromptEmbeddings
from .domain import all_prompts
from .evaluate import Setting, attention_mass_kept, evaluate
from .metric import train_classifier
from .model import ToySpec, load_toy_bundle, save_toy_folder
from .train_teacher import train_teacher

logger = logging.getLogger("training.toy.run_all")


def toy_asa(spec: ToySpec) -> dict:
    """ASA for the toy grid: blocks of 1/20 of the video tokens (the full-size Wan grid has 256 blocks of 128)."""
    if spec.size >= 32:
        return {"block_size": 64, "num_keep": 16}  # 1280 tokens
    if spec.size >= 16:
        return {"block_size": 16, "num_keep": 8}  # 320 tokens
    return {"block_size": 16, "num_keep": 4}


def saved_run(distill_dir: Path) -> tuple[Path | None, dict]:
    """The newest complete checkpoint in ``distill_dir`` (or None) and the distillation config it was written with."""
    path = resolve_resume(distill_dir, "latest")
    if path is None:
        return None, {}
    return path, json.loads((path / "state.json").read_text()).get("config", {})


def resume_conflicts(args, saved: dict, cfg: float | None) -> list[str]:
    """Settings of this call that differ from those of the run being resumed (the run's own settings win)."""
    problems = []
    if args.fixed_steps and saved.get("max_train_steps") != args.distill_steps:
        problems.append(f"--distill-steps {args.distill_steps} (the run has {saved.get('max_train_steps')})")
    if saved.get("train_batch_size") != args.distill_batch:
        problems.append(f"--distill-batch {args.distill_batch} (the run has {saved.get('train_batch_size')})")
    if saved.get("asa") != args.distill_asa:
        problems.append(f"--{'' if args.distill_asa else 'no-'}distill-asa (the run has asa={saved.get('asa')})")
    if cfg is not None and saved.get("guidance_scale") != cfg:
        problems.append(f"--cfg-scales {cfg} (the run has {saved.get('guidance_scale')})")
    return problems


def make_distiller(args, spec: ToySpec, teacher_dir: Path, emb_dir: Path, output_dir: Path, *, cfg: float, steps: int,
                   batch: int) -> Distiller:
    """A fresh Distiller of the toy teacher (student and fake score with ASA unless ``--no-distill-asa``)."""
    from accelerate import Accelerator

    device = torch.device(args.device)
    config = build_config(dict(
        model=str(teacher_dir), family=WAN.name, prompt_embeddings=str(emb_dir), output_dir=str(output_dir),
        **spec.video, lora_rank=args.lora_rank, lora_alpha=float(args.lora_rank), asa=args.distill_asa,
        attention_backend="torch", asa_overrides=toy_asa(spec) if args.distill_asa else {}, guidance_scale=cfg,
        negative_prompt_key="empty", max_train_steps=steps, train_batch_size=batch, gradient_accumulation_steps=1,
        learning_rate=args.lr, learning_rate_fake=args.lr_fake, lr_warmup_steps=5,
        mixed_precision="bf16" if device.type == "cuda" else "no", gradient_checkpointing=False,
        checkpointing_steps=max(1, steps // 4), validation_steps=0, resume="",
    ))
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=config.mixed_precision)
    student_bundle, _ = load_toy_bundle(teacher_dir)
    return Distiller(config, student_bundle, PromptEmbeddings.open(emb_dir), accelerator)


def distill_benchmark(distiller_for, batches: list[int], device: torch.device, steps: int = 3) -> list[dict]:
    """Steady-state seconds per distillation step at each batch size (one warm-up step, then ``steps`` timed)."""
    rows = []
    for batch in batches:
        distiller = distiller_for(1000, f"bench_{batch}", batch)  # a long schedule: no checkpoint inside the timing
        train(distiller, 1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        logs = train(distiller, steps + 1)
        seconds = sum(log.seconds for log in logs) / len(logs)  # each step ends on a loss read-out (a sync)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        rows.append({"batch_size": batch, "seconds_per_step": seconds, "samples_per_s": batch / seconds,
                     "peak_gib": peak})
        logger.info("distill benchmark: %s", rows[-1])
        del distiller
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True)
    p.add_argument("--small", action="store_true", help="CPU smoke-test size")
    p.add_argument("--teacher", help="reuse a saved toy teacher folder instead of training one")
    p.add_argument("--teacher-steps", type=int, default=50000, help="at most; the budget usually ends it")
    p.add_argument("--teacher-batch", type=int, default=256)
    p.add_argument("--teacher-lr", type=float, default=5e-4)
    p.add_argument("--teacher-budget", type=float, default=440.0,
                   help="seconds (run C: 440 s, about 9,400 steps on an H100, where the loss flattens)")
    p.add_argument("--teacher-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the teacher's blocks for training (default: on CUDA only)")
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--cfg-scales", default="2,3,4,5")
    p.add_argument("--distill-steps", type=int, default=400, help="at most; fewer if the budget is shorter")
    p.add_argument("--distill-batch", type=int, default=128,
                   help="the paper's global batch is 160; on an H100 a step at 128 costs 1.2x one at 32")
    p.add_argument("--distill-budget", type=float, default=380.0,
                   help="seconds (with --fixed-steps or on resume: when this call stops, after a checkpoint)")
    p.add_argument("--fixed-steps", action="store_true",
                   help="train exactly --distill-steps in all (no sizing probe); the run may span several calls")
    p.add_argument("--distill-dir", help="folder of the distillation's checkpoints and LoRA snapshots, kept across "
                   "calls (default: <output>/distill); a call resumes from its newest checkpoint")
    p.add_argument("--distill-stop-at", type=int, default=0, metavar="STEP",
                   help="end this call's distillation at this step (a checkpoint), to split a run over calls")
    p.add_argument("--lora-every", type=int, default=0, metavar="STEPS",
                   help="also export the student LoRA every this many steps (for the learning curve)")
    p.add_argument("--compare-lora", help="a student LoRA of another run, scored beside this one (blade sampler)")
    p.add_argument("--evaluate-snapshots", action="store_true",
                   help="do not distil: score the LoRA snapshots already in --distill-dir (the newest as the student)")
    p.add_argument("--compare-snapshots", metavar="DIR",
                   help="also score every student-*.safetensors snapshot in DIR (another run's curve, blade sampler)")
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-fake", type=float, default=5e-4)
    p.add_argument("--distill-asa", action=argparse.BooleanOptionalAction, default=True,
                   help="ASA in the student and fake score (--no-distill-asa: the dense-student ablation)")
    p.add_argument("--distill-benchmark", metavar="B,...",
                   help="only time distillation steps at these batch sizes (e.g. 32,64,128,160) and exit")
    p.add_argument("--repeats", type=int, default=8, help="samples per prompt in the evaluation")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "args": vars(args)}
    clock = time.perf_counter()

    def save() -> None:  # after every stage, so a run stopped early keeps what it measured
        results["total_seconds"] = time.perf_counter() - clock
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    # 1. teacher
    teacher_dir = Path(args.teacher) if args.teacher else out / "teacher"
    if not args.teacher:
        spec = ToySpec.small() if args.small else ToySpec()
        compile_blocks = device.type == "cuda" if args.teacher_compile is None else args.teacher_compile
        bundle, info = train_teacher(
            spec, steps=args.teacher_steps, batch_size=args.teacher_batch, lr=args.teacher_lr, device=args.device,
            time_budget=args.teacher_budget, compile_blocks=compile_blocks,
        )
        save_toy_folder(bundle, spec, teacher_dir)
        results["teacher_training"] = {
            "steps": info["steps"], "seconds": info["seconds"], "last_loss": info["history"][-1][1],
            "step_ms": info["step_ms"], "batch_size": args.teacher_batch, "lr": args.teacher_lr,
            "compiled": compile_blocks, "history": info["history"],
        }
        save()
    bundle, spec = load_toy_bundle(teacher_dir, device=device)
    geometry = spec.geometry
    prompts = all_prompts()
    text = encode_text(bundle, prompts).to(device)
    empty = encode_text(bundle, [""]).to(device)
    asa_config = ASAConfig.for_family(WAN, **toy_asa(spec))

    # 2. metric: trained when first needed (a call that only continues a distillation needs none)
    metric: list = []

    def classifier():
        if not metric:
            model, real_acc = train_classifier(geometry, steps=args.classifier_steps, device=args.device)
            results["classifier_real_prompt_match"] = real_acc
            save()
            metric.append(model)
        return metric[0]

    # 3. teacher CFG scale: the resumed run's, the one given, or the best of a search
    distill_dir = Path(args.distill_dir) if args.distill_dir else out / "distill"
    resume, saved = saved_run(distill_dir)
    scales = [float(s) for s in args.cfg_scales.split(",")]
    if resume is not None:
        problems = resume_conflicts(args, saved, scales[0] if len(scales) == 1 else None)
        if problems and not args.evaluate_snapshots:  # scoring snapshots trains nothing: the run's CFG is used
            raise SystemExit(f"{resume} belongs to a run with other settings: {'; '.join(problems)}. Use the run's "
                             "settings, or another --distill-dir.")
        cfg = float(saved["guidance_scale"])
    elif len(scales) == 1:
        cfg = scales[0]
    else:
        cfg_scores, _ = evaluate(bundle, text, empty,
                                 [Setting(f"teacher-50 cfg {s}", "baseline", 50, s) for s in scales],
                                 classifier(), geometry, asa_config, repeats=max(1, args.repeats // 2))
        best = max(cfg_scores, key=lambda s: (round(s.prompt_match, 2), -s.fd))
        cfg = best.setting["guidance"]
        results["cfg_search"] = [asdict(s) for s in cfg_scores]
        save()
    logger.info("teacher CFG scale: %s", cfg)

    # 4. data-free distillation from the prompts alone
    emb_dir = encode_to_folder(bundle, prompts, out / "prompt_embeddings", dtype=torch.float32, model_name="toy-wan")

    def distiller_for(steps: int, folder: str, batch: int | None = None) -> Distiller:
        return make_distiller(args, spec, teacher_dir, emb_dir, out / folder, cfg=cfg, steps=steps,
                              batch=batch or args.distill_batch)

    if args.distill_benchmark:
        results["distill_benchmark"] = distill_benchmark(
            distiller_for, [int(b) for b in args.distill_benchmark.split(",")], device)
        save()
        return 0

    if args.evaluate_snapshots:
        snapshots = list_snapshots(distill_dir / "loras")
        if not snapshots:
            raise SystemExit(f"no student-*.safetensors snapshots in {distill_dir / 'loras'}")
        lora_path = snapshots[-1]
        results["distillation"] = {"evaluated_snapshots_only": True, "steps": snapshot_step(lora_path),
                                   "total_steps": int(saved["max_train_steps"]) if saved else None,
                                   "cfg": cfg, "lora_rank": args.lora_rank, "distill_dir": str(distill_dir)}
        save()
    else:
        if resume is not None:  # the run's own length: its cosine schedule spans it
            steps, stop_after = int(saved["max_train_steps"]), args.distill_budget
        elif args.fixed_steps:
            steps, stop_after = args.distill_steps, args.distill_budget
        else:  # a 3-step probe sizes the run so that its cosine schedule ends inside the time budget
            probe = distiller_for(args.distill_steps, "distill_probe")
            train(probe, 1)  # the first step pays one-off costs (allocator, kernels)
            probe_start = time.perf_counter()
            train(probe, 3)
            per_step = (time.perf_counter() - probe_start) / 2
            steps = max(3, min(args.distill_steps, int(args.distill_budget / per_step)))
            stop_after = args.distill_budget * 1.2
            del probe
            logger.info("distillation: %.2f s/step -> %d steps", per_step, steps)
        distiller = make_distiller(args, spec, teacher_dir, emb_dir, distill_dir, cfg=cfg, steps=steps,
                                   batch=args.distill_batch)
        if resume is not None:
            distiller.load_checkpoint(resume)
        first_step, distill_start = distiller.step, time.perf_counter()
        logs = distill(distiller, steps, stop_after, distill_dir / "loras", every=args.lora_every,
                       stop_at=args.distill_stop_at)
        last_step = distiller.step
        finished = last_step >= steps
        lora_path = distiller.export_lora(out / "toy_blade_lora.safetensors") if finished else None
        distill_seconds = time.perf_counter() - distill_start  # with checkpoints and exports, as a run pays them
        results["distillation"] = {
            "steps": last_step, "total_steps": steps, "first_step": first_step, "finished": finished,
            "seconds": distill_seconds, "seconds_per_step": distill_seconds / max(1, len(logs)),
            "loss_fake": [round(log.loss_fake, 5) for log in logs[:: max(1, len(logs) // 20)]],
            "loss_student": [round(log.loss_student, 5) for log in logs[:: max(1, len(logs) // 20)]],
            "loss_means": loss_means(logs),
            "train_density_last": logs[-1].density if logs else None, "cfg": cfg, "lora_rank": args.lora_rank,
            "distill_dir": str(distill_dir),
        }
        del distiller
        save()
        if not finished:
            logger.info("distillation at step %d of %d: run the same command again to go on", last_step, steps)
            return 0

    # 5. evaluation
    settings = [
        Setting("teacher 50-step + CFG", "baseline", 50, cfg),
        Setting("teacher 8-step + CFG", "blade", 8, cfg),
        Setting("teacher 8-step + CFG + ASA (training-free)", "blade", 8, cfg, asa=True),
        # the student before distillation: what the LoRA starts from (the teacher, sparse, no CFG, tdm sampler)
        Setting("teacher 8-step + ASA, no CFG (tdm sampler; the student at step 0)", "tdm", 8, 1.0, asa=True),
    ]
    sparse = args.distill_asa
    student = "BLADE student 8-step + ASA" if sparse else "dense-distilled student 8-step, no ASA"
    if args.evaluate_snapshots:
        student += f" at step {snapshot_step(lora_path)}"
    settings += [
        Setting(f"{student} (blade sampler)", "blade", 8, 1.0, asa=sparse, lora=str(lora_path)),
        Setting(f"{student} (tdm sampler)", "tdm", 8, 1.0, asa=sparse, lora=str(lora_path)),
    ]
    if args.compare_lora:
        settings.append(Setting(f"{student} (blade sampler), --compare-lora", "blade", 8, 1.0, asa=sparse,
                                lora=args.compare_lora))
    scores, examples = evaluate(bundle, text, empty, settings, classifier(), geometry, asa_config,
                                repeats=args.repeats)
    results["scores"] = [asdict(s) for s in scores]
    save()
    # the learning curve: every snapshot of this run, scored by the same classifier (blade sampler)
    def score_curve(folder: Path, key: str, label: str) -> None:
        snapshots = list_snapshots(folder)
        if not snapshots:
            return
        curve, _ = evaluate(bundle, text, empty, [
            Setting(f"{label} at step {snapshot_step(p)} (blade sampler)", "blade", 8, 1.0, asa=sparse, lora=str(p))
            for p in snapshots], classifier(), geometry, asa_config, repeats=args.repeats)
        results[key] = [{"step": snapshot_step(p), **asdict(c)} for p, c in zip(snapshots, curve, strict=True)]
        save()

    score_curve(distill_dir / "loras", "curve", "student")
    if args.compare_snapshots:  # another run's curve, scored by this classifier
        score_curve(Path(args.compare_snapshots), "compare_curve", "compared run's student")
    torch.save({k: v.half() for k, v in examples.items()}, out / "examples.pt")
    (out / "results.md").write_text(markdown(results))
    try:
        results["attention_mass_kept"] = attention_mass_kept(bundle, text, asa_config, geometry)
    except (RuntimeError, ValueError, TypeError) as exc:  # an analysis, not a result: never lose the scores
        logger.warning("attention-mass analysis failed: %s", exc)
    save()
    (out / "results.md").write_text(markdown(results))
    logger.info("\n%s", markdown(results))
    return 0


def snapshot_step(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def snapshot_path(folder: Path, step: int) -> Path:
    """Where the student LoRA of ``step`` is exported (the name :func:`list_snapshots` finds)."""
    return folder / f"student-{step:05d}.safetensors"


def list_snapshots(folder: Path) -> list[Path]:
    """The student LoRA snapshots in ``folder``, in step order."""
    return sorted(folder.glob("student-*.safetensors"), key=snapshot_step)


def loss_means(logs: list, every: int = 50) -> list[dict]:
    """Mean losses over each run of ``every`` steps (one step's loss is too noisy to read a trend from)."""
    rows = []
    for start in range(0, len(logs), every):
        chunk = logs[start : start + every]
        rows.append({"last_step": chunk[-1].step, "loss_fake": sum(x.loss_fake for x in chunk) / len(chunk),
                     "loss_student": sum(x.loss_student for x in chunk) / len(chunk)})
    return rows


def distill(distiller: Distiller, steps: int, budget: float, snapshots: Path, *, every: int = 0,
            stop_at: int = 0) -> list:
    """Train towards ``steps`` until ``budget`` seconds or step ``stop_at``; the student LoRA is exported to
    ``snapshots`` every ``every`` steps and where this call stops. Every stop is on a checkpoint."""
    end = min(steps, stop_at) if stop_at > 0 else steps
    logs: list = []
    start = time.perf_counter()
    while distiller.step < end and time.perf_counter() - start < budget:
        target = min(end, (distiller.step // every + 1) * every) if every > 0 else end
        logs += train(distiller, target, time_budget=budget - (time.perf_counter() - start))
        if distiller.step < target:  # out of time (train wrote a checkpoint)
            break
        if every > 0 and distiller.step % every == 0:
            distiller.export_lora(snapshot_path(snapshots, distiller.step))
    if logs and not snapshot_path(snapshots, distiller.step).is_file():
        distiller.export_lora(snapshot_path(snapshots, distiller.step))
    return logs


def markdown(results: dict) -> str:
    lines = ["| setting | prompt match | colour | shape | direction | FD | ASA density | sparsity | sampling s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in results.get("scores", []):
        dens = f"{s['density']:.3f}" if s["density"] is not None else "-"
        spar = f"{s['sparsity']:.3f}" if s["sparsity"] is not None else "-"
        attrs = [f"{s['attributes'][k]:.3f}" for k in ("colour", "shape", "direction")]
        row = [s["label"], f"{s['prompt_match']:.3f}", *attrs, f"{s['fd']:.1f}", dens, spar, f"{s['seconds']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    for key, title in (("curve", "distillation step"), ("compare_curve", "compared run's step")):
        if not results.get(key):
            continue
        lines += ["", f"| {title} | prompt match | colour | shape | direction | FD |", "|---|---|---|---|---|---|"]
        for c in results[key]:
            attrs = [f"{c['attributes'][k]:.3f}" for k in ("colour", "shape", "direction")]
            lines.append(f"| {c['step']} | {c['prompt_match']:.3f} | {' | '.join(attrs)} | {c['fd']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
