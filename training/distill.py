"""Data-free, sparsity-aware TDM distillation of a BLADE LoRA (arXiv 2508.10774, Sec. 3.3).

    accelerate launch [--config_file training/configs/accelerate_ddp.yaml] -m training.distill \\
        --config training/configs/wan2.1_t2v_1.3b.yaml [--key value ...]

Needs a diffusers folder of the base model (``model``) and a prompt-embedding folder made by
``python -m training.encode_prompts`` (``prompt_embeddings``). Writes checkpoints, TensorBoard logs, validation
videos and the final ``pytorch_lora_weights.safetensors`` (diffusers naming, loads in the BLADE nodes) under
``output_dir``. Re-running the same command resumes from the newest complete, verified checkpoint. One run at a
time per ``output_dir`` (``distill.lock``); SIGTERM / Ctrl-C stop after a checkpoint of the step in progress (exit
143 / 130). Details: training/README.md, "Stopping, resuming, and what a start checks".
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from blade_ops.models.bundle import ModelBundle
from blade_ops.pipeline.latents import latent_grid, latent_shape
from blade_ops.sampling import make_sampler

from . import tdm
from .checkpoint import TrainState, load_latest, read_checkpoint, restore_rng, rng_state, write_checkpoint
from .config import DistillConfig, load_config
from .errors import NonFiniteLossError, ResumeConflictError, TrainingError
from .models import ADAPTERS, FAKE, STUDENT, TEACHER, TDMModels
from .prompts import PromptEmbeddings
from .run_dir import EXPORT_NAME, RunLock, check_fresh_start, clean_leftovers, set_aside_newer
from .stop import GracefulStop, StopRequested, TrainingStopped, exit_code, signal_name

logger = logging.getLogger("training.distill")


def warmup_cosine(warmup: int, total: int, min_ratio: float = 0.0):
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_asa_config(config: DistillConfig, family: str):
    """The family's ASA preset with the config's overrides, or None when ASA is off."""
    if not config.asa:
        return None
    from blade_ops.attention import ASAConfig

    return ASAConfig.for_family(family, **config.asa_overrides)


@dataclass
class StepLog:
    step: int
    loss_fake: float
    loss_student: float
    grad_norm_fake: float
    grad_norm_student: float
    lr: float
    density: float | None = None
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Distiller:
    """Holds the models, optimizers and randomness of one run; ``train()`` runs it to ``max_train_steps``.

    ``bundle`` needs the transformer (the base, also the dense teacher); the VAE is only used for validation
    videos. The accelerator decides device, mixed precision and the process group.
    """

    def __init__(self, config: DistillConfig, bundle: ModelBundle, embeddings: PromptEmbeddings, accelerator):
        bundle.require("transformer")
        _check_distributed_type(accelerator)
        self.config = config
        self.bundle = bundle
        self.family = bundle.family
        self.embeddings = embeddings
        self.accelerator = accelerator
        self.device = accelerator.device
        if embeddings.family != self.family.name:
            raise ValueError(
                f"The prompt embeddings were made with a {embeddings.family} model but the base model is "
                f"{self.family.name}; encode the prompts with this model's text encoder."
            )
        weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision, torch.float32)
        if self.device.type == "cpu":
            weight_dtype = torch.float32  # CPU autocast handles bf16 compute; keep weights exact
        # A family with several experts distils one of them (config.expert): it is student, fake score and teacher.
        self.expert = config.student_expert(self.family.name)
        transformer = _cast_base(getattr(bundle, self.expert).to(self.device), weight_dtype)
        self.asa_config = build_asa_config(config, self.family.name)
        torch.manual_seed(config.seed)  # LoRA A init: identical on every process and in every run with this seed
        self.models = TDMModels(
            transformer, self.family, rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets,
            asa_config=self.asa_config, attention_backend=config.attention_backend,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        for name in ADAPTERS:  # trainable LoRA weights stay fp32 (mixed precision computes in bf16)
            for p in self.models.lora_parameters(name):
                p.data = p.data.float()
        self.trainable = accelerator.prepare(self.models)
        self.optimizers = {}
        self.schedulers = {}
        for name, lr in ((STUDENT, config.learning_rate), (FAKE, config.learning_rate_fake)):
            opt = torch.optim.AdamW(
                self.models.lora_parameters(name), lr=lr, betas=(config.adam_beta1, config.adam_beta2),
                weight_decay=config.adam_weight_decay, eps=config.adam_epsilon,
            )
            self.optimizers[name] = accelerator.prepare(opt)
            factor = warmup_cosine(config.lr_warmup_steps, config.max_train_steps, config.lr_min_ratio)
            self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(self.optimizers[name], factor)
        scheduler_config = dict(bundle.scheduler_config or {})
        scheduler_config.setdefault("num_train_timesteps", config.num_train_timesteps)
        self.scheduler_config = scheduler_config
        self.param = self._tdm_sampler().parameterization()
        self.guidance = config.teacher_guidance(self.family.name, self.family.expert_index(self.expert))
        self.lambda_reg = config.reg_weight(self.family.name)
        self.negative = embeddings.special(config.negative_prompt_key).to(self.device)
        grid = latent_grid(self.family, frames=config.frames, height=config.height, width=config.width)
        channels = self.family.latent_channels_of(transformer)
        self.latent_shape = latent_shape(self.family, config.train_batch_size, grid, channels)
        self.huber_c = tdm.huber_c(self.latent_shape[1:], config.huber_c_scale)
        self.step = 0
        self._perms: dict[int, torch.Tensor] = {}

    # ---- data ------------------------------------------------------------------------------------------------
    def _tdm_sampler(self):
        cfg = self.config
        return make_sampler("tdm", self.family, self.scheduler_config, steps=cfg.num_steps, eta=cfg.eta)

    def sample_positions(self, step: int, micro: int) -> list[int]:
        """Global positions of this process's micro-batch in the run's stream of samples.

        Sample p of the run gets prompt ``permutation[p % n]`` and its own generator seeded from p, so what a sample
        sees does not depend on how the global batch is split over processes or on where a run was resumed.
        """
        cfg = self.config
        world, rank, b = self.accelerator.num_processes, self.accelerator.process_index, cfg.train_batch_size
        first = ((step * cfg.gradient_accumulation_steps + micro) * world + rank) * b
        return list(range(first, first + b))

    def sample_generators(self, positions: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(self.config.seed * 1_000_000_007 + p) for p in positions]

    def prompt_indices(self, positions: list[int]) -> list[int]:
        """Prompts of the given sample positions: a seeded permutation per epoch over the prompt list."""
        cfg, n = self.config, len(self.embeddings)
        out = []
        for pos in positions:
            epoch = pos // n
            if epoch not in self._perms:
                self._perms = {epoch: torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch))}
            out.append(int(self._perms[epoch][pos % n]))
        return out

    # ---- one optimisation step -------------------------------------------------------------------------------
    def _predict(self, role: str, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, grad: bool = False):
        model = self.trainable if grad else self.models
        with self.accelerator.autocast():
            return model(role, x, t.to(self.device), text)

    def _teacher_x0(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Teacher x0 with CFG (one batch of 2B: unconditional, conditional)."""
        neg = self.negative.expand(text.shape[0], -1, -1).to(text.dtype)
        out = self._predict(TEACHER, torch.cat([x, x]), torch.cat([t, t]), torch.cat([neg, text]))
        uncond, cond = out.chunk(2)
        guided = uncond + self.guidance * (cond - uncond)
        return self.param.to_x0_eps(x.float(), guided, t)[0]

    def _randn(self, shape, generators: list[torch.Generator]) -> torch.Tensor:
        """[B, ...] Gaussian noise, sample b from generators[b] (CPU), on the training device."""
        return torch.stack([torch.randn(shape[1:], generator=g) for g in generators]).to(self.device)

    def _rollout(self, text: torch.Tensor, generators: list[torch.Generator]):
        sampler = self._tdm_sampler()
        noise = self._randn(self.latent_shape, generators)

        def predict(x, t):
            self.models.set_step(int(sampler.timesteps.tolist().index(int(t[0]))))
            return self._predict(STUDENT, x, t, text)

        return tdm.rollout(predict, noise, sampler, generators), sampler.timesteps

    def _draw(self, generators: list[torch.Generator]):
        cfg = self.config
        return tdm.draw_training_timesteps(generators, cfg.num_steps, cfg.num_train_timesteps, cfg.max_timestep)

    def _scored_sample(self, x0, eps, t_mid, t, generators: list[torch.Generator]):
        z_mid, z_t = self._randn(x0.shape, generators), self._randn(x0.shape, generators)
        return tdm.renoise_and_diffuse(self.param, x0, eps, t_mid, t, self.config.eta, z_mid, z_t)

    def _clip_and_step(self, name: str) -> float:
        params = self.models.lora_parameters(name)
        norm = self.accelerator.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizers[name].step()
        self.schedulers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)
        return float(norm) if norm is not None else float("nan")

    def train_step(self) -> StepLog:
        cfg, acc = self.config, self.accelerator
        accum = cfg.gradient_accumulation_steps
        start = time.perf_counter()
        micro_batches = []
        for micro in range(accum):
            positions = self.sample_positions(self.step, micro)
            generators = self.sample_generators(positions)
            text = self.embeddings.get(self.prompt_indices(positions)).to(self.device)
            with torch.no_grad():
                states, timesteps = self._rollout(text, generators)
            micro_batches.append((text, states, timesteps, generators))

        # Fake score: learn the denoiser of the student's current distribution.
        loss_fake_total = 0.0
        for micro, (text, states, timesteps, generators) in enumerate(micro_batches):
            t_g, t_mid, t = self._draw(generators)
            x_g = tdm.pick_states(states, timesteps, t_g)
            with torch.no_grad():
                out = self._predict(STUDENT, x_g, t_g, text)
                x0, eps = self.param.to_x0_eps(x_g.float(), out, t_g)
                x_t = self._scored_sample(x0, eps, t_mid, t, generators)
                out_teacher = self._predict(TEACHER, x_t, t, text) if self.lambda_reg > 0 else None
            sync = acc.no_sync(self.trainable) if micro < accum - 1 else _nullcontext()
            with sync:
                out_fake = self._predict(FAKE, x_t, t, text, grad=True)
                loss = tdm.fake_score_loss(self.param, out_fake, x_t, t, x0, out_teacher, self.lambda_reg)
                acc.backward(loss / accum)
            loss_fake_total += loss.detach().item() / accum
        grad_fake = self._clip_and_step(FAKE)

        # Student: distribution matching through its own x0 at t_g.
        loss_student_total = 0.0
        for micro, (text, states, timesteps, generators) in enumerate(micro_batches):
            t_g, t_mid, t = self._draw(generators)
            x_g = tdm.pick_states(states, timesteps, t_g)
            sync = acc.no_sync(self.trainable) if micro < accum - 1 else _nullcontext()
            with sync:
                out = self._predict(STUDENT, x_g, t_g, text, grad=True)
                x0, eps = self.param.to_x0_eps(x_g.float(), out, t_g)
                with torch.no_grad():
                    x_t = self._scored_sample(x0.detach(), eps.detach(), t_mid, t, generators)
                    x0_teacher = self._teacher_x0(x_t, t, text)
                    x0_fake = self.param.to_x0_eps(x_t.float(), self._predict(FAKE, x_t, t, text), t)[0]
                loss = tdm.student_loss(
                    x0, x0_teacher, x0_fake, self.huber_c, normalize=self.family.normalised_student_loss
                )
                # Gradient checkpointing recomputes the student's blocks during backward: its adapter and ASA
                # processors must be active again (the teacher and fake score ran in between).
                self.models.set_role(STUDENT)
                acc.backward(loss / accum)
            loss_student_total += loss.detach().item() / accum
        grad_student = self._clip_and_step(STUDENT)
        if acc.num_processes > 1:  # log the mean over processes (the global batch), as a single-process run would
            both = acc.reduce(torch.tensor([loss_fake_total, loss_student_total], device=self.device), "mean")
            loss_fake_total, loss_student_total = (float(v) for v in both.tolist())
        values = {"loss_fake": loss_fake_total, "loss_student": loss_student_total, "grad_norm_fake": grad_fake,
                  "grad_norm_student": grad_student}
        if not all(math.isfinite(v) for v in values.values()):
            step = self.step + 1
            shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
            raise NonFiniteLossError(
                step,
                f"Step {step} of {cfg.max_train_steps} produced non-finite values ({shown}); training stopped and "
                "that step is not saved (the checkpoints on disk are unchanged). Lower learning_rate / "
                "learning_rate_fake or check the prompt embeddings, then run again: it resumes from the last "
                "checkpoint.",
            )
        self.step += 1
        density = None
        handle = self.models.asa_handle
        if handle is not None and hasattr(handle, "layer_density"):
            try:
                values = [float(v) for v in handle.layer_density().values()]
                density = sum(values) / len(values) if values else None
            except (TypeError, ValueError, RuntimeError):
                density = None
        return StepLog(
            step=self.step, loss_fake=loss_fake_total, loss_student=loss_student_total, grad_norm_fake=grad_fake,
            grad_norm_student=grad_student, lr=self.schedulers[STUDENT].get_last_lr()[0], density=density,
            seconds=time.perf_counter() - start,
        )

    # ---- state -----------------------------------------------------------------------------------------------
    def lora_tensors(self, adapter: str) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.models.transformer.named_parameters()
                if f".{adapter}." in n and "lora_" in n}

    def state(self) -> TrainState:
        return TrainState(
            step=self.step,
            loras={a: self.lora_tensors(a) for a in ADAPTERS},
            optimizers={a: self.optimizers[a].state_dict() for a in ADAPTERS},
            schedulers={a: self.schedulers[a].state_dict() for a in ADAPTERS},
            extra={"config": self.config.to_dict(), "world_size": self.accelerator.num_processes},
        )

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        rng = rng_state()
        state = self.state() if acc.is_main_process else None
        return write_checkpoint(
            self.config.output_dir, self.step, state, rng, rank=acc.process_index, barrier=acc.wait_for_everyone,
            keep=self.config.checkpoints_total_limit,
        )

    def load_checkpoint(self, path: str | Path) -> None:
        """Continue from the checkpoint folder ``path``; CheckpointError (naming the file) when it is damaged."""
        state, rng = read_checkpoint(path, self.accelerator.process_index, require=ADAPTERS)
        self.apply_checkpoint(path, state, rng)

    def resume(self, resume: str) -> Path | None:
        """Continue as ``resume`` says: '' -> nothing, 'latest' -> the newest complete, valid checkpoint of the
        output folder (skipping damaged ones, with a log line each), else that checkpoint folder. Returns it."""
        if not resume:
            return None
        if resume != "latest":
            self.load_checkpoint(resume)
            return Path(resume)
        loaded = load_latest(self.config.output_dir, self.accelerator.process_index, require=ADAPTERS)
        if loaded is None:
            return None
        self.apply_checkpoint(loaded.path, loaded.state, loaded.rng)
        return loaded.path

    def apply_checkpoint(self, path: str | Path, state: TrainState, rng: dict[str, Any] | None) -> None:
        """Load a checkpoint read by :func:`~training.checkpoint.read_checkpoint` into the models and optimizers."""
        _check_resume_config(path, state.extra.get("config"), self.config)
        for adapter in ADAPTERS:
            if set(state.loras[adapter]) != set(self.lora_tensors(adapter)):
                raise ResumeConflictError(f"Checkpoint {str(path)!r} does not fit this model's {adapter} LoRA.")
        params = dict(self.models.transformer.named_parameters())
        with torch.no_grad():
            for adapter in ADAPTERS:
                for name, value in state.loras[adapter].items():
                    params[name].copy_(value)
        for adapter in ADAPTERS:
            self.optimizers[adapter].load_state_dict(state.optimizers[adapter])
            self.schedulers[adapter].load_state_dict(state.schedulers[adapter])
        self.step = state.step
        if rng is not None:  # absent when the checkpoint was written by fewer processes: nothing else depends on it
            restore_rng(rng)
        logger.info("Resumed from %s at step %d", path, self.step)

    # ---- outputs ---------------------------------------------------------------------------------------------
    def export_metadata(self) -> dict[str, Any]:
        return {
            "base_model": self.config.model or self.bundle.variant or "",
            "family": self.family.name,
            "expert": self.expert,  # the transformer whose LoRA slot this file belongs in
            "rank": self.config.lora_rank,
            "alpha": self.config.lora_alpha,
            "steps": self.config.num_steps,
            "training_steps": self.step,
            "asa": self.asa_config.to_dict() if self.asa_config is not None else None,
            "method": "BLADE sparsity-aware TDM distillation",
        }

    def export_lora(self, path: str | Path) -> Path:
        from .export import export_student_lora

        return export_student_lora(self.models.transformer, path, self.export_metadata(), self.config.export_dtype)

    def validate(self) -> list[Path]:
        from .validation import validation_videos

        return validation_videos(self)


# Settings a checkpoint fixes: the LoRA tensors only mean the same with the same rank, alpha and targets, and the
# optimizer state restores its own learning rate and Adam settings over the config's.
RESUME_FIXED = (
    "lora_rank", "lora_alpha", "lora_targets", "share_base", "expert", "learning_rate", "learning_rate_fake",
    "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
)


def _check_resume_config(path: str | Path, saved: dict[str, Any] | None, config: DistillConfig) -> None:
    """Raise ValueError naming every RESUME_FIXED setting that differs from the checkpoint's config."""
    if not saved:
        return
    current = config.to_dict()
    changed = [f"{k}: {saved[k]!r} -> {current[k]!r}" for k in RESUME_FIXED
               if k in saved and saved[k] != current[k]]
    if changed:
        raise ResumeConflictError(
            f"Checkpoint {str(path)!r} was trained with other settings ({'; '.join(changed)}); resuming would "
            "ignore or misread them. Set them back, or start a new run in another output_dir."
        )


def _check_distributed_type(accelerator) -> None:
    """DDP (and single-process) runs are supported; sharded ones are refused up front, not half-supported.

    Student and fake score are two adapters of one module with two optimizers stepping at different times, and a
    checkpoint takes LoRA and optimizer state from rank 0: both assume replicated (DDP) state. DeepSpeed wants one
    optimizer per engine, and FSDP/ZeRO shard the optimizer state that rank 0 would save.
    """
    kind = str(getattr(accelerator, "distributed_type", "NO")).rsplit(".", 1)[-1]
    if kind in ("DEEPSPEED", "FSDP"):
        raise RuntimeError(
            f"training.distill does not support {kind} yet (two optimizers on one module, rank-0 checkpoints); use "
            "training/configs/accelerate_ddp.yaml: the base is frozen, so DDP holds Wan 1.3B and CogVideoX 5B "
            "LoRA training on 80 GB GPUs."
        )


def _cast_base(transformer: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast the frozen base to the compute dtype, keeping the modules diffusers wants in float32 (norms, rope)."""
    if next(transformer.parameters()).dtype == dtype:
        return transformer
    keep = set(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    for name, param in transformer.named_parameters():
        if not any(part in keep for part in name.split(".")):
            param.data = param.data.to(dtype)
    return transformer


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def train(
    distiller: Distiller,
    max_steps: int | None = None,
    *,
    tracker: bool = False,
    time_budget: float = float("inf"),
    stop: GracefulStop | None = None,
) -> list[StepLog]:
    """Run from ``distiller.step`` to ``max_steps`` (default: the config's), with checkpoints and validation.

    Stops early (after a checkpoint) once ``time_budget`` seconds have passed. With ``stop`` (installed signal
    handlers), a SIGTERM/SIGINT ends the run at the next step boundary: a checkpoint of that step is written (unless
    it was just written) and :class:`~training.stop.TrainingStopped` is raised.
    """
    cfg, acc = distiller.config, distiller.accelerator
    max_steps = cfg.max_train_steps if max_steps is None else max_steps
    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=distiller.step, desc="distill", disable=not acc.is_local_main_process)
    logs: list[StepLog] = []
    start = time.perf_counter()
    saved_step, last_checkpoint = distiller.step, None
    with stop.deferring() if stop is not None else contextlib.nullcontext():
        while distiller.step < max_steps:
            if stop is not None and (signum := stop.agreed(acc)) is not None:
                if distiller.step != saved_step:
                    last_checkpoint = distiller.save_checkpoint()
                bar.close()
                raise TrainingStopped(signum, distiller.step, last_checkpoint)
            log = distiller.train_step()
            logs.append(log)
            bar.update(1)
            bar.set_postfix(fake=f"{log.loss_fake:.4f}", student=f"{log.loss_student:.4f}")
            if tracker and log.step % cfg.log_every == 0:
                values = {"loss/fake": log.loss_fake, "loss/student": log.loss_student, "lr": log.lr,
                          "grad_norm/fake": log.grad_norm_fake, "grad_norm/student": log.grad_norm_student,
                          "time/step_s": log.seconds}
                if log.density is not None:
                    values["asa/density"] = log.density
                acc.log(values, step=log.step)
            out_of_time = time.perf_counter() - start > time_budget
            if log.step % cfg.checkpointing_steps == 0 or log.step == max_steps or out_of_time:
                last_checkpoint, saved_step = distiller.save_checkpoint(), log.step
                every = cfg.validation_steps
                if acc.is_main_process and (every < 0 or (every > 0 and log.step % every == 0)):
                    with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []):
                        distiller.validate()
            if out_of_time:
                logger.info("Time budget of %.0f s reached at step %d", time_budget, log.step)
                break
    bar.close()
    return logs


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status: 0 done, 1 an error to fix (logged, no traceback), 128 + signal
    number when stopped by SIGINT (130) or SIGTERM (143) after saving a checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML or JSON file with DistillConfig fields")
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(args.config, rest)

    # Preconditions, before anything heavy is loaded.
    if not config.model:
        raise SystemExit("Set `model` (a diffusers folder of the base model) in the config or with --model.")
    if not config.prompt_embeddings:
        raise SystemExit("Set `prompt_embeddings` (a folder from `python -m training.encode_prompts`).")
    stop = GracefulStop().install()
    try:
        return _run(config, stop)
    except TrainingStopped as err:
        logger.warning("Stopped by %s at step %d (%s). Run the same command again to resume.",
                       signal_name(err.signum), err.step,
                       f"checkpoint {err.checkpoint}" if err.checkpoint is not None else "nothing new to save")
        return exit_code(err.signum)
    except StopRequested as err:
        logger.warning("Stopped by %s at once (outside a training step, or a second signal); the checkpoints on "
                       "disk are complete, a write in progress was discarded. Run the same command again to resume.",
                       signal_name(err.signum))
        return exit_code(err.signum)
    except TrainingError as err:
        logger.error("%s", err)
        return 1
    finally:
        stop.restore()


def _run(config: DistillConfig, stop: GracefulStop) -> int:
    embeddings = PromptEmbeddings.open(config.prompt_embeddings)
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from .loading import load_parts

    has_tb = _has_tensorboard()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # lets torchrun start CPU (gloo) process groups for functional checks
        mixed_precision=config.mixed_precision,
        log_with="tensorboard" if has_tb else None,
        project_dir=config.output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    out = Path(config.output_dir)
    lock = RunLock(out) if accelerator.is_main_process else None
    try:
        if lock is not None:  # one run per output folder; then the leftovers of one that was killed mid-write
            lock.acquire()
            clean_leftovers(out)
        accelerator.wait_for_everyone()
        if not config.resume:
            check_fresh_start(out)
        if not has_tb:
            logger.warning("tensorboard is not installed (pip install tensorboard): losses go to the log only.")
        bf16 = config.mixed_precision == "bf16" and accelerator.device.type == "cuda"
        dtype = torch.bfloat16 if bf16 else torch.float32
        if (Path(config.model) / "toy_spec.json").is_file():  # the shipped toy model (training/toy): its own VAE
            from .toy.model import load_toy_bundle

            bundle, _ = load_toy_bundle(config.model, dtype=dtype)
        else:
            bundle = load_parts(config.model, ("transformer", "vae"), family=config.family or embeddings.family,
                                dtype=dtype)
        distiller = Distiller(config, bundle, embeddings, accelerator)
        resumed = distiller.resume(config.resume)
        if resumed is not None:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                set_aside_newer(out, distiller.step)
            accelerator.wait_for_everyone()
        if has_tb:
            accelerator.init_trackers("distill", config=_flat_hparams(config.to_dict()))
        logs = train(distiller, tracker=has_tb, stop=stop)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            path = distiller.export_lora(out / EXPORT_NAME)
            logger.info("Exported the student LoRA to %s", path)
        if logs:
            logger.info("Last step %d: loss_fake %.5f loss_student %.5f", logs[-1].step, logs[-1].loss_fake,
                        logs[-1].loss_student)
        accelerator.end_training()
        return 0
    finally:
        if lock is not None:
            lock.release()


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


def _flat_hparams(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


if __name__ == "__main__":
    sys.exit(main())
