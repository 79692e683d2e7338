"""Typed settings of one distillation run, read from a YAML/JSON file plus ``--key value`` overrides.

Defaults are the values of BLADE's sparsity-aware TDM distillation (arXiv 2508.10774, Sec. 3.3 and App. B; the
authors' released Wan2.1 training script); a comment gives the reason where a value is not obvious.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from blade_ops.families import family_names, get_family

FAMILY_NAMES = tuple(family_names())
MIXED_PRECISIONS = ("no", "bf16", "fp16")
ATTENTION_BACKENDS = ("auto", "flex", "block_sparse_attn", "torch")


@dataclass
class DistillConfig:
    """Everything ``python -m training.distill`` needs; validated in ``__post_init__``."""

    # --- what to distil -----------------------------------------------------------------------------------------
    model: str = ""  # diffusers folder (or single file) of the base model; the teacher is this model, dense
    family: str = ""  # a family name (blade_ops.families); empty: read from the model folder
    # Families with several transformers (Wan2.2 A14B: "transformer" = high-noise, "transformer_2" = low-noise):
    # the one distilled. Student, fake score and teacher are all that expert; empty: the family's choice.
    expert: str = ""
    prompt_embeddings: str = ""  # folder written by `python -m training.encode_prompts`
    output_dir: str = "outputs/distill"

    # --- video geometry of the training samples (latents are generated, never read: the method is data-free) ---
    width: int = 832
    height: int = 480
    frames: int = 81

    # --- student / fake-score LoRA ------------------------------------------------------------------------------
    lora_rank: int = 64
    lora_alpha: float = 64.0  # alpha = rank: LoRA scale 1
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # every attention (Wan: 240 modules)
    share_base: bool = True  # student and fake score are two adapters on one frozen base (saves a model copy)

    # --- ASA (student and fake score are sparse; the teacher is dense) -------------------------------------------
    asa: bool = True
    attention_backend: str = "auto"
    asa_overrides: dict[str, Any] = field(default_factory=dict)  # ASAConfig fields on top of the family preset

    # --- TDM ---------------------------------------------------------------------------------------------------
    num_steps: int = 8  # K: student sampling steps; rollout timesteps 999, 874, ..., 124
    num_train_timesteps: int = 1000
    eta: float = 0.9  # share of the predicted noise kept when moving to the next timestep (rest is fresh noise)
    guidance_scale: float = -1.0  # teacher CFG; <0 means the family default (Wan 5.0, CogVideoX 3.5)
    negative_prompt_key: str = "negative"  # which pre-encoded embedding is the teacher's unconditional input
    max_timestep: int = 980  # upper end (exclusive) of t ~ U[t_mid, 980) for the score models
    lambda_reg: float = -1.0  # fake-score regulariser towards the teacher; <0: family default (Wan 0, CogVideoX 0.5)
    huber_c_scale: float = 1e-3  # pseudo-Huber c = scale * sqrt(numel / (64*64*4)) of one sample's latent

    # --- optimisation ------------------------------------------------------------------------------------------
    max_train_steps: int = 300
    train_batch_size: int = 5  # per process
    gradient_accumulation_steps: int = 4
    learning_rate: float = 1e-4  # student
    learning_rate_fake: float = 5e-4  # the fake score must track the moving student, so it learns faster
    adam_beta1: float = 0.0  # no momentum: the TDM target moves every step
    adam_beta2: float = 0.95
    adam_weight_decay: float = 1e-4
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_warmup_steps: int = 5
    lr_min_ratio: float = 0.0  # cosine decays to this fraction of the peak learning rate
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    seed: int = 0

    # --- bookkeeping -------------------------------------------------------------------------------------------
    checkpointing_steps: int = 15
    checkpoints_total_limit: int = 3  # older checkpoints are deleted once a newer one is complete
    resume: str = "latest"  # "latest", a checkpoint folder, or "" for a new run (refused where one already is)
    validation_prompts: tuple[str, ...] = ()  # empty: the first prompts of the embedding folder
    num_validation_prompts: int = 2
    validation_steps: int = -1  # <0: at every checkpoint; 0: never
    log_every: int = 1
    export_dtype: str = "bf16"  # dtype of the exported LoRA file

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.family and self.family not in FAMILY_NAMES:
            problems.append(f"family={self.family!r} must be one of {FAMILY_NAMES} (or empty to detect it)")
        if self.mixed_precision not in MIXED_PRECISIONS:
            problems.append(f"mixed_precision={self.mixed_precision!r} must be one of {MIXED_PRECISIONS}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            problems.append(f"attention_backend={self.attention_backend!r} must be one of {ATTENTION_BACKENDS}")
        if self.export_dtype not in ("bf16", "fp16", "fp32"):
            problems.append(f"export_dtype={self.export_dtype!r} must be one of ('bf16', 'fp16', 'fp32')")
        for name in ("lora_rank", "num_steps", "max_train_steps", "train_batch_size", "gradient_accumulation_steps",
                     "checkpointing_steps", "checkpoints_total_limit", "num_train_timesteps", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name}={value!r} must be an integer >= 1")
        for name in ("lora_alpha", "learning_rate", "learning_rate_fake", "adam_epsilon", "max_grad_norm",
                     "huber_c_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                problems.append(f"{name}={value!r} must be a positive number")
        if not 0.0 <= self.eta <= 1.0:
            problems.append(f"eta={self.eta!r} must be in [0, 1]")
        if not (0.0 <= self.adam_beta1 < 1.0 and 0.0 <= self.adam_beta2 < 1.0):
            problems.append(f"adam betas ({self.adam_beta1}, {self.adam_beta2}) must be in [0, 1)")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            problems.append(f"lr_min_ratio={self.lr_min_ratio!r} must be in [0, 1]")
        if self.lr_warmup_steps < 0:
            problems.append(f"lr_warmup_steps={self.lr_warmup_steps!r} must be >= 0")
        if isinstance(self.num_steps, int) and isinstance(self.num_train_timesteps, int) and self.num_steps >= 1:
            if self.num_train_timesteps % self.num_steps:
                problems.append(
                    f"num_train_timesteps={self.num_train_timesteps} must be a multiple of num_steps={self.num_steps} "
                    "(the rollout visits t = T-1, T-1-T/K, ...)"
                )
            elif not self.num_train_timesteps // self.num_steps < self.max_timestep <= self.num_train_timesteps:
                problems.append(
                    f"max_timestep={self.max_timestep} must be in ({self.num_train_timesteps // self.num_steps}, "
                    f"{self.num_train_timesteps}]"
                )
        if self.frames < 1 or self.width < 1 or self.height < 1:
            problems.append(f"video size {self.width}x{self.height}x{self.frames} must be positive")
        if not self.lora_targets:
            problems.append("lora_targets must name at least one module (e.g. to_q, to_k, to_v, to_out.0)")
        if problems:
            raise ValueError("Invalid distillation config: " + "; ".join(problems) + ".")

    # ---- derived values --------------------------------------------------------------------------------------
    def teacher_guidance(self, family: str, expert: int = 0) -> float:
        """Teacher CFG scale: the family adapter's for the distilled expert (Wan 5.0 with the Wan negative prompt,
        CogVideoX 3.5)."""
        if self.guidance_scale >= 0:
            return self.guidance_scale
        return get_family(family).teacher_guidance_for(expert)

    def student_expert(self, family: str) -> str:
        """The transformer distilled: ``expert``, else the family's choice; ValueError naming the valid ones."""
        fam = get_family(family)
        name = self.expert or fam.student_expert
        fam.expert_index(name)
        return name

    def reg_weight(self, family: str) -> float:
        """Weight of the fake score's pull towards the teacher: Wan 0, CogVideoX 0.5 (the authors' settings)."""
        if self.lambda_reg >= 0:
            return self.lambda_reg
        return get_family(family).teacher_regularisation

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Turn a string from the command line (or a JSON/YAML scalar) into the field's type."""
    origin = get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}={value!r} is not a boolean (true/false)")
    if hint in (int, float):
        try:
            return hint(value) if hint is float or not isinstance(value, str) else int(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}={value!r} is not a valid {hint.__name__}") from exc
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        item = get_args(hint)[0]
        return tuple(_coerce(name, item, v) for v in value)
    if origin is dict or hint is dict:
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise ValueError(f"{name}={value!r} must be a mapping")
        return dict(value)
    return value if not isinstance(value, str) or hint is str else str(value)


def build_config(values: dict[str, Any]) -> DistillConfig:
    """A validated DistillConfig from a mapping; unknown keys are an error naming the valid ones."""
    hints = get_type_hints(DistillConfig)
    valid = {f.name for f in fields(DistillConfig)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"Unknown config keys {unknown}; valid keys: {sorted(valid)}.")
    return DistillConfig(**{k: _coerce(k, hints[k], v) for k, v in values.items()})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Mapping from a .yaml/.yml or .json file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Config file {str(path)!r} does not exist.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"Config file {str(path)!r} must end in .yaml, .yml or .json.")
    if not isinstance(data, dict):
        raise ValueError(f"Config file {str(path)!r} must hold a mapping of keys to values.")
    return data


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs (dashes or underscores) into a mapping of raw strings."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ValueError(f"Expected --key value, got {arg!r}.")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(argv):
                raise ValueError(f"--{key} needs a value.")
            value = argv[i + 1]
            i += 2
        out[key.replace("-", "_")] = value
    return out


def load_config(config_path: str | None, overrides: list[str] | dict[str, Any] | None = None) -> DistillConfig:
    """Config file (optional) + overrides -> validated DistillConfig."""
    values: dict[str, Any] = read_config_file(config_path) if config_path else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    values.update(overrides or {})
    return build_config(values)
