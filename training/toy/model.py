"""The toy text-to-video model: a small WanTransformer3DModel (the real diffusers architecture), the tiny UMT5
text encoder and word tokenizer of blade_ops.models.tiny, the exact pixel VAE stand-in and Wan's UniPC scheduler.

Saved as a diffusers-style folder (model_index.json + one subfolder per part, safetensors only); the transformer,
text encoder and tokenizer load through blade_ops' own loader, the VAE through :class:`PixelVAE`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from blade_ops.families import WAN
from blade_ops.models.bundle import ModelBundle
from blade_ops.models.pixel_vae import PixelVAE

from .domain import ToyGeometry


@dataclass(frozen=True)
class ToySpec:
    """Sizes of the toy model and its videos; ``small()`` is the CPU smoke-test size."""

    dim_heads: int = 3
    head_dim: int = 64
    layers: int = 6
    ffn: int = 512
    text_dim: int = 32  # the tiny UMT5 encoder's d_model
    frames: int = 5  # latent frames (video: 17)
    size: int = 16  # latent cells per side (video: 128 x 128); 5 x 8 x 8 = 320 video tokens

    @classmethod
    def small(cls) -> ToySpec:
        return cls(dim_heads=2, head_dim=12, layers=2, ffn=32, frames=3, size=8)

    @property
    def geometry(self) -> ToyGeometry:
        if self.size >= 32:
            return ToyGeometry(frames=self.frames, size=self.size)
        if self.size >= 16:
            return ToyGeometry(frames=self.frames, size=self.size, radius=(2.0, 3.0), speed=(1.25, 2.0))
        return ToyGeometry(frames=self.frames, size=self.size, radius=(1.5, 2.5), speed=(1.0, 1.5))

    @property
    def video(self) -> dict[str, int]:
        g = self.geometry
        return {"width": g.video_size, "height": g.video_size, "frames": g.video_frames}

    def transformer_config(self) -> dict:
        return dict(
            patch_size=(1, 2, 2), num_attention_heads=self.dim_heads, attention_head_dim=self.head_dim,
            in_channels=16, out_channels=16, text_dim=self.text_dim, freq_dim=64, ffn_dim=self.ffn,
            num_layers=self.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64,
        )


def build_toy_bundle(spec: ToySpec, seed: int = 0) -> ModelBundle:
    """Freshly initialised toy model (transformer random; text encoder and tokenizer as in blade_ops' tiny models)."""
    from diffusers import WanTransformer3DModel

    from blade_ops.models.tiny import build_word_tokenizer, tiny_scheduler, tiny_text_encoder

    tokenizer = build_word_tokenizer()
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**spec.transformer_config())
    return ModelBundle(
        family=WAN, transformer=transformer, vae=PixelVAE(), tokenizer=tokenizer,
        text_encoder=tiny_text_encoder(WAN.name, vocab_size=len(tokenizer), seed=seed + 2, d_model=spec.text_dim),
        scheduler_config=dict(tiny_scheduler(WAN.name).config), variant="toy-wan",
    )


def save_toy_folder(bundle: ModelBundle, spec: ToySpec, path: str | Path, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write the toy model as a diffusers-style folder (transformer in ``dtype``, the rest fp32)."""
    from diffusers import UniPCMultistepScheduler

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    transformer = bundle.transformer
    keep = set(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    for name, param in transformer.named_parameters():  # norms, rope and time embedding stay fp32, as diffusers does
        if not any(part in keep for part in name.split(".")):
            param.data = param.data.to(dtype)
    transformer.save_pretrained(path / "transformer", safe_serialization=True)
    transformer.float()
    bundle.vae.save_pretrained(path / "vae", safe_serialization=True)
    bundle.text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
    bundle.tokenizer.save_pretrained(path / "tokenizer")
    UniPCMultistepScheduler.from_config(bundle.scheduler_config).save_pretrained(path / "scheduler")
    index = {
        "_class_name": "WanPipeline", "_diffusers_version": "0.42.1",
        "transformer": ["diffusers", "WanTransformer3DModel"], "vae": ["blade_ops.models.pixel_vae", "PixelVAE"],
        "text_encoder": ["transformers", "UMT5EncoderModel"], "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=1))
    (path / "toy_spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return path


def load_toy_bundle(path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(bundle, spec) of a saved toy folder, loaded by blade_ops' loader like any Wan diffusers folder."""
    from blade_ops.models import load_model_bundle

    path = Path(path)
    spec = ToySpec(**json.loads((path / "toy_spec.json").read_text()))
    bundle = load_model_bundle(path, family=WAN.name, dtype=dtype, device=device)
    bundle.variant = "toy-wan"
    return bundle, spec
