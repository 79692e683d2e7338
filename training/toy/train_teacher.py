"""Train the toy teacher: a small Wan transformer learns the toy domain by flow matching.

    python -m training.toy.train_teacher --output outputs/toy/teacher [--steps 4000] [--compile] [--small]
    python -m training.toy.train_teacher --output outputs/toy --benchmark 64:0,256:0,256:1   # step times only

Flow matching as Wan: x_t = (1 - sigma) x0 + sigma eps, the model predicts v = eps - x0 at timestep 1000 sigma;
sigma is drawn half uniform, half with Wan's shift 3 (more weight on high noise). 10% of the prompts are dropped to
the empty prompt so the teacher supports classifier-free guidance. The saved weights are an EMA of the training
weights. Clips are rendered on the training device, so a step is one batch of GPU work with no host round trip.
The latent statistics (per-channel mean and std) are measured on the domain and stored in the VAE config.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

from blade_ops.sampling import FlowMatching
from blade_ops.text import encode_text

from .domain import all_prompts, random_batch
from .model import ToySpec, build_toy_bundle, save_toy_folder

logger = logging.getLogger("training.toy.train_teacher")


def latent_statistics(bundle, spec: ToySpec, n: int, generator: torch.Generator) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw latents of n random clips."""
    _, cells = random_batch(n, spec.geometry, generator)
    z = bundle.vae.encode_cells(cells)
    return z.mean(dim=(0, 2, 3, 4)).tolist(), z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist()


def train_teacher(
    spec: ToySpec,
    *,
    steps: int,
    batch_size: int,
    lr: float = 3e-4,
    device: str = "cpu",
    seed: int = 0,
    time_budget: float = float("inf"),
    cfg_dropout: float = 0.1,
    ema_decay: float = 0.999,
    log_every: int = 100,
    compile_blocks: bool = False,
):
    """(bundle with EMA transformer, info dict). Stops early when ``time_budget`` seconds are spent.

    Everything per step happens on ``device``: clips are rendered there from a generator on that device, and the
    only host syncs are the log lines (every ``log_every`` steps) and the time check. ``compile_blocks`` compiles
    each transformer block (one graph shared by all blocks, so compile time does not grow with depth).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    bundle = build_toy_bundle(spec, seed)
    mean, std = latent_statistics(bundle, spec, 4096 if spec.size >= 32 else 512, gen)
    bundle.vae.register_to_config(latents_mean=mean, latents_std=std)
    bundle.text_encoder.to(device)
    bundle.vae.to(device)
    prompts = all_prompts()
    text = encode_text(bundle, prompts + [""]).to(device)  # [P + 1, L, D], last row: the empty prompt
    empty_row = torch.tensor(len(prompts), device=device)
    model = bundle.transformer.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    ema_params, model_params = list(ema.parameters()), list(model.parameters())
    if compile_blocks:
        for block in model.blocks:
            block.compile()
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model_params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01, fused=fused)
    warmup = min(200, steps // 10 + 1)
    flow = FlowMatching(1000)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    dgen = torch.Generator(device).manual_seed(seed + 1)  # the per-step randomness, on the device
    history, step = [], 0
    running, counted = torch.zeros((), device=device), 0  # loss summed on the device: logged as a mean, no sync
    timed_from, timed_steps = None, 0  # steady-state step time: from step 20 on (after compile and warmup)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        # Cosine over steps or over the time budget, whichever ends first, so a budgeted run still anneals.
        progress = min(1.0, max((step - 1) / steps, (time.perf_counter() - start) / time_budget))
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
        index, cells = random_batch(batch_size, spec.geometry, dgen, device)
        with torch.no_grad():
            x0 = bundle.vae.normalise(bundle.vae.encode_cells(cells))
        drop = torch.rand(batch_size, generator=dgen, device=device) < cfg_dropout
        cond = text[torch.where(drop, empty_row, index)]
        u = torch.rand(batch_size, generator=dgen, device=device)
        shifted = 3 * u / (1 + 2 * u)
        sigma = torch.where(torch.rand(batch_size, generator=dgen, device=device) < 0.5, u, shifted).clamp(1e-3, 1)
        t = sigma * 1000
        noise = torch.randn(x0.shape, generator=dgen, device=device)
        x_t = flow.add_noise(x0, noise, t)
        with autocast:
            v = model(hidden_states=x_t, timestep=t, encoder_hidden_states=cond, return_dict=False)[0]
        loss = (v.float() - flow.velocity(x0, noise)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model_params, 1.0, foreach=True)
        opt.step()
        running += loss.detach()
        counted += 1
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, model_params, 1 - decay)
        if step == 20:
            _sync(device)
            timed_from = time.perf_counter()
        elif timed_from is not None:
            timed_steps += 1
        if step % log_every == 0 or step == 1:
            # the mean over the steps since the last log line: one batch's loss is too noisy to see it flatten
            history.append((step, running.item() / counted))
            running.zero_()
            counted = 0
            logger.info("step %d loss %.4f (%.0f s)", step, history[-1][1], time.perf_counter() - start)
        if time.perf_counter() - start > time_budget:
            logger.info("time budget of %.0f s reached at step %d", time_budget, step)
            break
    _sync(device)
    seconds = time.perf_counter() - start
    step_ms = 1000 * (time.perf_counter() - timed_from) / timed_steps if timed_steps else None
    if step_ms is not None:
        logger.info("steady-state step: %.1f ms at batch %d", step_ms, batch_size)
    if counted:
        history.append((step, running.item() / counted))
    bundle.transformer = ema.float()
    bundle.text_encoder.to("cpu")
    return bundle, {"steps": step, "seconds": seconds, "history": history, "step_ms": step_ms,
                    "batch_size": batch_size, "compiled": compile_blocks}


def benchmark(spec: ToySpec, configs: list[tuple[int, bool]], *, steps: int = 80, device: str = "cuda") -> list[dict]:
    """Steady-state step time of teacher training for each (batch size, compile_blocks), fresh model each."""
    rows = []
    for batch_size, compiled in configs:
        torch._dynamo.reset()  # a new batch size would otherwise recompile with dynamic shapes
        start = time.perf_counter()
        _, info = train_teacher(spec, steps=steps, batch_size=batch_size, device=device, compile_blocks=compiled,
                                log_every=steps)
        rows.append({"batch_size": batch_size, "compiled": compiled, "step_ms": info["step_ms"],
                     "samples_per_s": batch_size * 1000 / info["step_ms"],
                     "first_steps_s": time.perf_counter() - start})
        logger.info("benchmark: %s", rows[-1])
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder to write the toy model to")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--time-budget", type=float, default=float("inf"), help="seconds; stop early after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small", action="store_true", help="CPU smoke-test size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile each transformer block")
    parser.add_argument("--benchmark", metavar="B:C,...", help="only time steps, e.g. 64:0,256:1 (batch:compile)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.steps < 1 or args.batch_size < 1:
        raise SystemExit("--steps and --batch-size must be >= 1.")
    spec = ToySpec.small() if args.small else ToySpec()
    if args.benchmark:
        configs = [(int(b), c == "1") for b, c in (item.split(":") for item in args.benchmark.split(","))]
        rows = benchmark(spec, configs, steps=min(args.steps, 80), device=args.device)
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / "teacher_benchmark.json").write_text(json.dumps(rows, indent=1))
        return 0
    bundle, info = train_teacher(spec, steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device,
                                 seed=args.seed, time_budget=args.time_budget,
                                 compile_blocks=args.compile)
    save_toy_folder(bundle, spec, Path(args.output))
    info["lr"], info["seed"] = args.lr, args.seed
    (Path(args.output) / "training.json").write_text(json.dumps(info, indent=1))
    logger.info("Saved the toy teacher (%d steps, %.0f s) to %s", info["steps"], info["seconds"], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
