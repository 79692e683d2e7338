"""Train the toy teacher: a small Wan transformer learns the toy domain by flow matching.

    python -m training.toy.train_teacher --output outputs/toy/teacher [--steps 4000] [--small]

Flow matching as Wan: x_t = (1 - sigma) x0 + sigma eps, the model predicts v = eps - x0 at timestep 1000 sigma;
sigma is drawn half uniform, half with Wan's shift 3 (more weight on high noise). 10% of the prompts are dropped to
the empty prompt so the teacher supports classifier-free guidance. The saved weights are an EMA of the training
weights. The latent statistics (per-channel mean and std) are measured on the domain and stored in the VAE config.
"""

from __future__ import annotations

import argparse
import copy
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
):
    """(bundle with EMA transformer, list of (step, loss)). Stops early when ``time_budget`` seconds are spent."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    bundle = build_toy_bundle(spec, seed)
    mean, std = latent_statistics(bundle, spec, 4096 if spec.size >= 32 else 512, gen)
    bundle.vae.register_to_config(latents_mean=mean, latents_std=std)
    bundle.text_encoder.to(device)
    bundle.vae.to(device)
    prompts = all_prompts()
    text = encode_text(bundle, prompts + [""]).to(device)  # [P + 1, L, D], last row: the empty prompt
    model = bundle.transformer.to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warmup = min(200, steps // 10 + 1)
    flow = FlowMatching(1000)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    history, start, step = [], time.perf_counter(), 0
    for step in range(1, steps + 1):
        # Cosine over steps or over the time budget, whichever ends first, so a budgeted run still anneals.
        progress = min(1.0, max((step - 1) / steps, (time.perf_counter() - start) / time_budget))
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
        index, cells = random_batch(batch_size, spec.geometry, gen, device)
        with torch.no_grad():
            x0 = bundle.vae.normalise(bundle.vae.encode_cells(cells))
        drop = torch.rand(batch_size, generator=gen).to(device) < cfg_dropout
        cond = text[torch.where(drop, torch.full_like(index, len(prompts)), index)]
        u = torch.rand(batch_size, generator=gen)
        shifted = 3 * u / (1 + 2 * u)
        sigma = torch.where(torch.rand(batch_size, generator=gen) < 0.5, u, shifted).clamp(1e-3, 1.0)
        t = (sigma * 1000).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        x_t = flow.add_noise(x0, noise, t)
        with autocast:
            v = model(hidden_states=x_t, timestep=t, encoder_hidden_states=cond, return_dict=False)[0]
        loss = (v.float() - flow.velocity(x0, noise)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        if step % log_every == 0 or step == 1:
            history.append((step, loss.item()))
            logger.info("step %d loss %.4f (%.0f s)", step, loss.item(), time.perf_counter() - start)
        if time.perf_counter() - start > time_budget:
            logger.info("time budget of %.0f s reached at step %d", time_budget, step)
            break
    bundle.transformer = ema.float()
    bundle.text_encoder.to("cpu")
    return bundle, {"steps": step, "seconds": time.perf_counter() - start, "history": history}


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.steps < 1 or args.batch_size < 1:
        raise SystemExit("--steps and --batch-size must be >= 1.")
    spec = ToySpec.small() if args.small else ToySpec()
    bundle, info = train_teacher(spec, steps=args.steps, batch_size=args.batch_size, lr=args.lr, device=args.device,
                                 seed=args.seed, time_budget=args.time_budget)
    save_toy_folder(bundle, spec, Path(args.output))
    logger.info("Saved the toy teacher (%d steps, %.0f s) to %s", info["steps"], info["seconds"], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
