"""ASA inside ComfyUI's own Wan models, through core's attention override (the native path of DESIGN.md).

Core's Wan self-attention calls ``optimized_attention(q, k, v, heads=..., transformer_options=...)``. When
``transformer_options["optimized_attention_override"]`` is set, core calls it as ``override(func, q, k, v, heads,
mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False, **kwargs)``, q/k/v being [B, N,
heads*dim] (or [B, heads, N, dim] with ``skip_reshape``). That holds for ComfyUI a125cd8 (2025-10) and for the
2026 code, whose wrapper hands an override without ``container_function`` plain tensors taken out of its
``AttentionTensorContainer``. Cross-attention uses the same hook; its keys are text tokens (a different length).

ASA reorders video tokens along a 3D curve, so it needs the token grid (T, H, W). A DIFFUSION_MODEL wrapper
records it from the latent the model is called with and the model's patch size; a call whose token count does
not match that grid (reference frames, context latents) is never guessed at: it goes to the previous override.

Everything here is ComfyUI glue; the attention itself is ``blade_ops.attention.asa_attention``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..blade_ops.attention.asa import ASAStats, asa_attention
from ..blade_ops.attention.backends import resolve_backend
from ..blade_ops.attention.config import ASAConfig
from ..blade_ops.prepare import AsaRequest, resolve_asa_config

log = logging.getLogger(__name__)

PATCH_KEY = "blade_asa"  # key of the callbacks and wrapper this patch adds to the ModelPatcher
LORA_SETTINGS_KEY = "blade_lora_asa"  # transformer_options entry: the ASA settings of each BLADE LoRA applied
_STATE_ATTR = "blade_asa_state"  # marks override closures made here
_PREVIOUS_ATTR = "blade_previous"


def video_grid(latent: torch.Tensor, patch_size, time_concat: torch.Tensor | None = None) -> tuple[int, int, int]:
    """Token grid of core's Wan for a latent [B, C, T, H, W] (padded up to the patch size, as core pads it)."""
    if latent.dim() != 5:
        raise ValueError(f"Wan latents are [B, C, T, H, W]; got shape {tuple(latent.shape)}.")
    pt, ph, pw = (int(p) for p in patch_size)
    frames = -(-latent.shape[2] // pt) * pt
    if time_concat is not None:
        frames += -(-time_concat.shape[2] // pt) * pt
    return frames // pt, -(-latent.shape[3] // ph), -(-latent.shape[4] // pw)


@dataclass
class RunReport:
    """What ASA did in one sampling run (for the log line at its end, the UI and tests)."""

    sparse_calls: int = 0
    mean_density: float = float("nan")  # mean kept-block fraction of the sparse calls
    sample_gap: int | None = None
    dense_calls: Counter = field(default_factory=Counter)  # reason -> number of self-attention calls kept dense
    settings_origin: str | None = None

    @property
    def sparsity(self) -> float:
        """BLADE's reported sparsity: 1 - mean(mask) - 1/sample_gap (the global branch's pooled keys count)."""
        gap = 1.0 / self.sample_gap if self.sample_gap else 0.0
        return max(0.0, 1.0 - self.mean_density - gap)  # nothing is skipped when every block is kept

    def describe(self) -> str:
        dense = ", ".join(f"{n} {reason}" for reason, n in self.dense_calls.most_common()) or "none"
        return (
            f"{self.sparse_calls} sparse self-attention calls, mean density {self.mean_density:.3f} "
            f"(sparsity {self.sparsity:.3f}); dense calls: {dense}; settings from {self.settings_origin}"
        )


class NativeASAState:
    """One BLADE ASA patch of a core Wan model: the request, and what the current forward and run know."""

    def __init__(self, request: AsaRequest, start_percent: float, end_percent: float) -> None:
        self.request = request
        self.start_percent = start_percent
        self.end_percent = end_percent
        self.sigma_start = math.inf  # sparse while sigma_end <= sigma <= sigma_start
        self.sigma_end = 0.0
        self.grid: tuple[int, int, int] | None = None
        self.self_calls = 0  # self-attention calls in the current forward (block index where core gives none)
        self.stats = ASAStats()
        self.dense_calls: Counter = Counter()
        self.last_report: RunReport | None = None
        self._configs: dict[tuple, tuple[ASAConfig, str]] = {}
        self._config: ASAConfig | None = None  # the config of the latest call, for the run's report
        self._origin: str | None = None
        self._backend: dict[str, str] = {}
        self._logged: set[str] = set()

    # ---- run and forward boundaries ---------------------------------------------------------------------------
    def begin_run(self, model_sampling: Any | None) -> None:
        """Reset the per-run state; the sigma window follows the model_sampling the run uses (shift included)."""
        self.stats.reset()
        self.dense_calls.clear()
        self._origin = None
        if model_sampling is not None:
            self.sigma_start = float(model_sampling.percent_to_sigma(self.start_percent))
            self.sigma_end = float(model_sampling.percent_to_sigma(self.end_percent))

    def end_run(self) -> RunReport | None:
        """Log what the run did (once per run) and keep it as :attr:`last_report`."""
        if not self.stats.calls and not self.dense_calls:
            return self.last_report
        config = self._config
        report = RunReport(
            sparse_calls=self.stats.calls, mean_density=self.stats.mean_density,
            sample_gap=config.sample_gap if config is not None and config.use_global else None,
            dense_calls=Counter(self.dense_calls), settings_origin=self._origin,
        )
        log.info("BLADE ASA: %s", report.describe())
        self.last_report = report
        self.stats.reset()
        self.dense_calls.clear()
        return report

    def enter_forward(self, grid: tuple[int, int, int] | None) -> tuple:
        saved = (self.grid, self.self_calls)
        self.grid, self.self_calls = grid, 0
        return saved

    def exit_forward(self, saved: tuple) -> None:
        self.grid, self.self_calls = saved

    # ---- decisions --------------------------------------------------------------------------------------------
    def log_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.info("BLADE ASA: " + message, *args)

    def config_for(self, transformer_options: Mapping) -> ASAConfig:
        """The run's ASA config: the request resolved against the BLADE LoRAs the model carries."""
        recorded = tuple(transformer_options.get(LORA_SETTINGS_KEY) or ())
        key = tuple(tuple(sorted((k, str(v)) for k, v in s.items())) if s else None for s in recorded)
        if key not in self._configs:
            config, origin = resolve_asa_config(self.request, recorded)
            log.info("BLADE ASA: settings from %s: %s", origin, config)
            self._configs[key] = (config, origin)
        self._config, self._origin = self._configs[key]
        return self._config

    def backend_for(self, device: torch.device) -> str:
        name = self._backend.get(str(device))
        if name is None:
            name = resolve_backend(self.request.backend, device)
            self._backend[str(device)] = name
            log.info("BLADE ASA: backend %r on %s", name, device)
        return name

    def dense_reason(self, transformer_options: Mapping, block_index: int, config: ASAConfig) -> str | None:
        """Why this self-attention call runs dense by the settings (sigma window, dense blocks/steps), or None."""
        sigmas = transformer_options.get("sigmas")
        sigma = float(sigmas.flatten()[0]) if isinstance(sigmas, torch.Tensor) else None
        if sigma is not None and not self.sigma_end <= sigma <= self.sigma_start:
            return "outside the start/end percent window"
        if block_index in config.dense_layers:
            return "in dense_blocks"
        if config.dense_steps:
            step = _step_index(transformer_options.get("sample_sigmas"), sigma)
            if step is None:
                self.log_once("no-step", "the sampler reports no sigma schedule; dense_steps does not apply")
            elif step < config.dense_steps:
                return "within dense_steps"
        return None

    @torch.compiler.disable  # data-dependent block selection; ASA runs its own compiled kernels
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: ASAConfig) -> torch.Tensor:
        """ASA on q, k, v [B, H, N, D] with the current forward's grid; returns [B, H, N, D]."""
        return asa_attention(
            q, k, v, grid=self.grid, num_text_tokens=0, config=config,
            backend=self.backend_for(q.device), stats=self.stats,
        )


def _step_index(sample_sigmas: Any, sigma: float | None) -> int | None:
    if not isinstance(sample_sigmas, torch.Tensor) or sigma is None or sample_sigmas.numel() < 2:
        return None
    steps = sample_sigmas.flatten()[:-1].float()
    return int(torch.argmin((steps - sigma).abs()))


def make_override(state: NativeASAState, previous: Callable | None) -> Callable:
    """The attention override: ASA for the Wan self-attention calls it can take, ``previous`` (or core's own
    function) for every other call, the reason logged once."""

    def override(func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        transformer_options = kwargs.get("transformer_options") or {}

        def decline(reason: str | None):
            if reason is not None:
                state.log_once(reason, "call left to the previous attention: %s", reason)
            kw = dict(mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                      skip_output_reshape=skip_output_reshape, **kwargs)
            if previous is None:
                return func(q, k, v, heads, **kw)
            return previous(func, q, k, v, heads, **kw)

        if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
            return decline("q/k/v are not plain tensors")
        token_dim = 2 if skip_reshape else 1
        tokens = q.shape[token_dim]
        if k.shape[token_dim] != tokens or v.shape[token_dim] != tokens:
            return decline(None)  # cross-attention (text or image keys): not ASA's
        if mask is not None:
            return decline("an attention mask was given")
        if state.grid is None:
            return decline("no latent grid recorded (the model was not called through its forward)")
        if tokens != state.grid[0] * state.grid[1] * state.grid[2]:
            return decline(f"{tokens} tokens do not match the latent grid {state.grid} (reference or context frames)")
        block_index = transformer_options.get("block_index")
        if block_index is None:
            block_index = state.self_calls
        state.self_calls += 1
        dim = q.shape[-1] if skip_reshape else q.shape[-1] // heads
        scale = kwargs.get("scale")
        if scale is not None and not math.isclose(float(scale), dim**-0.5, rel_tol=1e-6):
            return decline(f"attention scale {scale} is not 1/sqrt({dim})")
        config = state.config_for(transformer_options)
        reason = state.dense_reason(transformer_options, int(block_index), config)
        if reason is not None:
            state.dense_calls[reason] += 1
            return decline(reason)
        if skip_reshape:
            out = state.attend(q, k, v, config)
        else:
            b = q.shape[0]
            q4, k4, v4 = (t.view(b, tokens, heads, dim).transpose(1, 2) for t in (q, k, v))
            out = state.attend(q4, k4, v4, config)
        if skip_output_reshape:
            return out
        return out.transpose(1, 2).reshape(out.shape[0], tokens, heads * dim)

    setattr(override, _STATE_ATTR, state)
    setattr(override, _PREVIOUS_ATTR, previous)
    return override


def put_on_top(state: NativeASAState, transformer_options: dict) -> None:
    """Put ``state``'s override on top of the override in ``transformer_options`` (idempotent).

    An override of another BLADE ASA patch is replaced, not stacked (one ASA per model); any other override (core's
    sparse attention, sage attention, ...) stays below and gets the calls ASA declines.
    """
    current = transformer_options.get("optimized_attention_override")
    if getattr(current, _STATE_ATTR, None) is state:
        return
    if getattr(current, _STATE_ATTR, None) is not None:
        current = getattr(current, _PREVIOUS_ATTR)
    transformer_options["optimized_attention_override"] = make_override(state, current)


def grid_wrapper(state: NativeASAState) -> Callable:
    """DIFFUSION_MODEL wrapper: records the token grid of each forward from the latent and the patch size."""

    def wrapper(executor, x, *args, **kwargs):
        time_concat = args[3] if len(args) > 3 else kwargs.get("time_dim_concat")
        model = executor.class_obj
        try:
            grid = video_grid(x, model.patch_size, time_concat)
        except (AttributeError, TypeError, ValueError) as err:  # not a [B, C, T, H, W] latent: ASA declines
            state.log_once("no-grid", "no token grid for this model input (%s); attention stays as it was", err)
            grid = None
        saved = state.enter_forward(grid)
        try:
            return executor(x, *args, **kwargs)
        finally:
            state.exit_forward(saved)

    return wrapper
