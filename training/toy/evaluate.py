"""Sample the toy model with the pack's pipeline pieces (blade_ops samplers, denoise loop, ASA, LoRA loader, VAE
decode) under several settings and score each with the toy metric."""

from __future__ import annotations

import copy
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from blade_ops.attention import ASAConfig, get_asa_handle, install_asa
from blade_ops.families import WAN
from blade_ops.lora import apply_lora
from blade_ops.models.bundle import ModelBundle
from blade_ops.pipeline.decode import unscale_latents
from blade_ops.pipeline.denoise import Guidance, denoise
from blade_ops.pipeline.latents import prepare_latents
from blade_ops.sampling import make_sampler
from blade_ops.text import PromptEmbeds

from .domain import ToyGeometry
from .metric import ToyClassifier, attribute_match, features, frechet_distance, reference_clips

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    """One way of sampling: sampler name and steps, CFG scale, ASA on/off, LoRA file or None, fp8 linears on/off."""

    label: str
    sampler: str
    steps: int
    guidance: float
    asa: bool = False
    lora: str | None = None
    fp8_linears: bool = False  # blade_ops.models.fp8_linear, put on after ASA and the LoRA


@dataclass
class Score:
    label: str
    prompt_match: float
    fd: float
    density: float | None
    sparsity: float | None
    seconds: float
    setting: dict
    attributes: dict  # colour / shape / direction / prompt match, separately


def model_for(bundle: ModelBundle, setting: Setting, asa_config: ASAConfig, backend: str) -> ModelBundle:
    """A copy of the bundle whose transformer carries the setting's ASA, LoRA and fp8 linears (in that order, as
    blade_ops.prepare puts them on)."""
    transformer = copy.deepcopy(bundle.transformer)
    if setting.asa:
        install_asa(transformer, asa_config, backend)
    if setting.lora:
        apply_lora(transformer, setting.lora)
    if setting.fp8_linears:
        from blade_ops.models.fp8_linear import install_fp8_linears

        # A measurement, not a user's run: on a CPU (smoke runs) torch's slow e4m3 emulation computes the same values.
        install_fp8_linears(transformer, allow_cpu=True)
    view = copy.copy(bundle)
    view.transformer = transformer
    return view


@torch.no_grad()
def sample_cells(
    bundle: ModelBundle, text: torch.Tensor, negative: torch.Tensor, index: torch.Tensor, setting: Setting,
    geometry: ToyGeometry, *, batch: int = 108, seed: int = 0,
) -> torch.Tensor:
    """Samples for prompt rows ``index`` as colour cells [N, 3, T, S, S] in [-1, 1]."""
    device = next(bundle.transformer.parameters()).device
    grid = (geometry.frames, geometry.size, geometry.size)
    out = []
    for start in range(0, len(index), batch):
        rows = index[start : start + batch]
        generator = torch.Generator().manual_seed(seed + start)
        latents = prepare_latents(WAN, len(rows), grid, generator, device=device)
        cond = text[rows].to(device)
        embeds = PromptEmbeds(cond, negative.expand(len(rows), -1, -1).to(device) if setting.guidance > 1 else None)
        sampler = make_sampler(setting.sampler, WAN, bundle.scheduler_config, steps=setting.steps)
        latents = denoise(bundle, embeds, latents, sampler, Guidance(setting.guidance), generator=generator)
        out.append(bundle.vae.decode_cells(unscale_latents(bundle, latents)).clamp(-1, 1))
    return torch.cat(out)


def evaluate(
    bundle: ModelBundle,
    text: torch.Tensor,
    negative: torch.Tensor,
    settings: list[Setting],
    classifier: ToyClassifier,
    geometry: ToyGeometry, asa_config: ASAConfig, *, repeats: int = 4, backend: str = "torch", seed: int = 0,
) -> tuple[list[Score], dict[str, torch.Tensor]]:
    """Score each setting on ``repeats`` samples of every prompt; returns scores and the first samples' cells."""
    index = torch.arange(text.shape[0]).repeat(repeats)
    real = reference_clips(index, geometry).to(next(classifier.parameters()).device)
    real_features = features(classifier, real)
    scores, examples = [], {}
    for setting in settings:
        view = model_for(bundle, setting, asa_config, backend)
        handle = get_asa_handle(view.transformer)
        if handle is not None:
            handle.stats.reset()
        start = time.perf_counter()
        cells = sample_cells(view, text, negative, index, setting, geometry, seed=seed)
        seconds = time.perf_counter() - start
        cells = cells.to(real.device)
        density = handle.stats.mean_density if handle is not None else None
        sparsity = 1 - density - 1 / asa_config.sample_gap if density is not None else None
        attributes = attribute_match(classifier, cells, index.to(real.device))
        score = Score(setting.label, attributes["prompt"],
                      frechet_distance(features(classifier, cells), real_features), density, sparsity, seconds,
                      asdict(setting), attributes)
        logger.info("%s: prompt match %.4f (colour %.3f, shape %.3f, direction %.3f), FD %.3f, density %s (%.1f s)",
                    score.label, score.prompt_match, attributes["colour"], attributes["shape"],
                    attributes["direction"], score.fd, f"{density:.3f}" if density is not None else "-", seconds)
        scores.append(score)
        examples[setting.label] = cells[: text.shape[0]].cpu()
        del view
    return scores, examples


@contextmanager
def _record_attention_mass(records: list[float], config: ASAConfig, backend: str):
    """Wrap ASA's attention call: for each call, the share of the dense softmax mass inside the selected blocks."""
    from blade_ops.attention import processors
    from blade_ops.attention.asa import asa_plan
    from blade_ops.attention.curve import curve_permutation_on

    original = processors.asa_attention

    def wrapped(q, k, v, *, grid, num_text_tokens, **kwargs):
        perm, _ = curve_permutation_on(grid, q.device, num_text_tokens)
        qr, kr = q[:, :, perm], k[:, :, perm]
        selection = asa_plan(qr, kr, num_text_tokens=num_text_tokens, config=config)
        probs = torch.softmax((qr.float() @ kr.float().transpose(-1, -2)) / q.shape[-1] ** 0.5, dim=-1)
        bs = config.block_size
        length = probs.shape[-1]
        pad = -length % bs
        probs = torch.nn.functional.pad(probs, (0, pad, 0, pad))
        b, h = probs.shape[:2]
        n = probs.shape[-1] // bs
        block_mass = probs.reshape(b, h, n, bs, n, bs).sum(dim=(3, 5))  # [B, H, nqb, nkb]
        kept = (block_mass * selection.dense.float()).sum() / block_mass.sum()
        records.append(float(kept))
        return original(q, k, v, grid=grid, num_text_tokens=num_text_tokens, **kwargs)

    processors.asa_attention = wrapped
    try:
        yield
    finally:
        processors.asa_attention = original


@torch.no_grad()
def attention_mass_kept(
    bundle: ModelBundle, text: torch.Tensor, asa_config: ASAConfig, geometry: ToyGeometry, *, backend: str = "torch",
    timesteps: tuple[int, ...] = (999, 750, 500, 250), batch: int = 8,
) -> dict[int, float]:
    """Mean share of the dense attention mass inside ASA's selected blocks, per timestep, over the teacher's layers,
    on the teacher's own noisy samples (teacher x0 from a 50-step run is not needed: real clips are noised)."""
    from blade_ops.sampling import FlowMatching

    from .domain import random_batch

    view = model_for(bundle, Setting("mass", "baseline", 1, 1.0, asa=True), asa_config, backend)
    device = next(view.transformer.parameters()).device
    gen = torch.Generator().manual_seed(7)
    index, cells = random_batch(batch, geometry, gen, device)
    x0 = view.vae.normalise(view.vae.encode_cells(cells))
    result = {}
    for t in timesteps:
        records: list[float] = []
        noise = torch.randn(x0.shape, generator=gen).to(device)
        x_t = FlowMatching(1000).add_noise(x0, noise, torch.tensor(float(t)))
        with _record_attention_mass(records, asa_config, backend):
            view.transformer(hidden_states=x_t, timestep=torch.full((batch,), float(t), device=device),
                             encoder_hidden_states=text[index].to(device), return_dict=False)
        result[t] = sum(records) / len(records)
    return result
