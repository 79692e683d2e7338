"""Validation videos at checkpoints: the student (its LoRA + ASA) samples the validation prompts with the 8-step
BLADE schedule and no CFG, exactly as the nodes will, and each video is written as mp4. A family with several
experts distils one of them; its validation videos come from that expert alone at every step, as it was trained."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from blade_ops.pipeline.decode import decode
from blade_ops.pipeline.denoise import denoise
from blade_ops.pipeline.latents import latent_grid, prepare_latents
from blade_ops.sampling import make_sampler
from blade_ops.text import PromptEmbeds
from blade_ops.video_io import write_video

from .models import STUDENT

if TYPE_CHECKING:
    from .distill import Distiller

logger = logging.getLogger(__name__)


def validation_indices(distiller: Distiller) -> list[int]:
    """Embedding rows of the validation prompts: the configured texts, else the first few prompts."""
    cfg, prompts = distiller.config, distiller.embeddings.prompts
    if not cfg.validation_prompts:
        return list(range(min(cfg.num_validation_prompts, len(prompts))))
    missing = [p for p in cfg.validation_prompts if p not in prompts]
    if missing:
        raise ValueError(f"validation_prompts {missing} are not in the prompt-embedding folder; encode them too.")
    return [prompts.index(p) for p in cfg.validation_prompts]


@torch.no_grad()
def validation_videos(distiller: Distiller, sampler_name: str = "blade") -> list[Path]:
    """Sample and write one mp4 per validation prompt under ``<output_dir>/validation/step-<n>/``."""
    bundle, cfg = distiller.bundle, distiller.config
    if bundle.vae is None:
        logger.info("No VAE loaded: skipping validation videos.")
        return []
    models = distiller.models
    models.set_role(STUDENT)
    was_training = models.training
    models.eval()
    device = distiller.device
    vae_device = next(bundle.vae.parameters()).device
    bundle.vae.to(device)
    out_dir = Path(cfg.output_dir) / "validation" / f"step-{distiller.step}"
    paths = []
    try:
        grid = latent_grid(bundle.family, frames=cfg.frames, height=cfg.height, width=cfg.width)
        student = {name: models.transformer for name in bundle.family.expert_names}
        view = type(bundle)(family=bundle.family, **student, vae=bundle.vae,
                            scheduler_config=bundle.scheduler_config, dtype=models.base_dtype)
        for n, index in enumerate(validation_indices(distiller)):
            sampler = make_sampler(sampler_name, bundle.family, distiller.scheduler_config, steps=cfg.num_steps)
            generator = torch.Generator().manual_seed(cfg.seed + n)
            channels = bundle.family.latent_channels_of(models.transformer)
            latents = prepare_latents(bundle.family, 1, grid, generator, channels=channels, device=device)
            text = distiller.embeddings.get([index]).to(device, models.base_dtype)
            with distiller.accelerator.autocast():
                latents = denoise(view, PromptEmbeds(text), latents, sampler, generator=generator)
            frames = decode(view, latents)[0]
            path = write_video(frames, out_dir / f"{n:02d}.mp4", fps=bundle.family.fps, overwrite=True,
                               metadata={"prompt": distiller.embeddings.prompts[index], "step": distiller.step})
            paths.append(path)
        logger.info("Wrote %d validation videos to %s", len(paths), out_dir)
    except (RuntimeError, OSError, ImportError) as exc:  # a failed video must not end a long run
        logger.warning("Validation videos at step %d failed: %s", distiller.step, exc)
    finally:
        bundle.vae.to(vae_device)
        models.train(was_training)
    return paths
