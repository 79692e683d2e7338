"""Single-file T5 text encoders as ComfyUI keeps them in models/text_encoders (umt5_xxl_fp16.safetensors for Wan2.1,
t5xxl_fp16.safetensors for CogVideoX).

Layout (ComfyUI ``comfy/text_encoders/t5.py``, the same names as transformers' T5EncoderModel): ``shared.weight``,
``encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight``, ``...layer.0.SelfAttention.relative_attention_bias
.weight`` (UMT5: every block; T5: block 0 only), ``...layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight``, layer norms
and ``encoder.final_layer_norm.weight``. Wan's UMT5 files carry their sentencepiece tokenizer as a uint8 tensor
``spiece_model`` (ComfyUI's ``UMT5XXlTokenizer`` reads it from there); T5-XXL files do not. "Scaled fp8" files hold
fp8 weights with a ``<name>.scale_weight`` each; they are dequantised (weight * scale) on load.

The transformers config is built from the tensor shapes; settings no shape shows (the relative-position maximum
distance 128, layer-norm epsilon 1e-6, gated tanh-GELU) are the released models' and may be overridden.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from .files import check_weight_file, load_tensors, read_shapes

logger = logging.getLogger(__name__)

FINAL_NORM = "encoder.final_layer_norm.weight"
TOKENIZER_KEY = "spiece_model"
EXPECTED_KEYS = ("shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight", FINAL_NORM)
_EXTRA_SUFFIXES = (".scale_weight", ".scale_input")
_EXTRA_KEYS = ("scaled_fp8", TOKENIZER_KEY, "logit_scale", "text_projection.weight")
TOKENIZER_ADVICE = (
    "Give a tokenizer: a folder with the model's tokenizer files (tokenizer_config.json and spiece.model, from the "
    "tokenizer/ folder of the diffusers release, e.g. THUDM/CogVideoX-5b or Wan-AI/Wan2.1-T2V-1.3B-Diffusers) "
    "saved as '<file name without .safetensors>_tokenizer' or 'tokenizer' next to the file, or a spiece .model file. "
    "Or load a diffusers folder instead, or encode with ComfyUI's CLIPLoader + CLIPTextEncode and convert with "
    "BLADE Conditioning To Embeds."
)


def _prefix(path: Path, shapes: dict[str, tuple[int, ...]]) -> str:
    """The key prefix in front of the encoder's names ("" for ComfyUI's files)."""
    hits = sorted(k[: -len(FINAL_NORM)] for k in shapes if k.endswith(FINAL_NORM))
    if not hits:
        found = ", ".join(sorted(shapes)[:6]) or "no tensors"
        raise ValueError(
            f"{path} is not a T5/UMT5 text encoder: expected encoder keys such as {', '.join(EXPECTED_KEYS)}; "
            f"found {len(shapes)} keys like {found}."
        )
    return hits[0]


def _need(path: Path, shapes: dict, key: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ValueError(f"{path} lacks {key!r} ({what}); it is not a complete T5/UMT5 text encoder file.")
    return shapes[key]


def encoder_config(
    path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None, overrides: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """("umt5" | "t5", transformers config kwargs) of an encoder file, from its tensor shapes (prefix removed)."""
    path = Path(path)
    shapes = read_shapes(path) if shapes is None else shapes
    p = _prefix(path, shapes)
    shapes = {k[len(p):]: v for k, v in shapes.items() if k.startswith(p)}
    embed = shapes.get("shared.weight") or _need(path, shapes, "encoder.embed_tokens.weight", "token embeddings")
    vocab, d_model = embed
    layers = len({m[1] for k in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", k))})
    attn = "encoder.block.{}.layer.0.SelfAttention."
    inner = _need(path, shapes, attn.format(0) + "q.weight", "attention width")[0]
    buckets, heads = _need(path, shapes, attn.format(0) + "relative_attention_bias.weight", "position buckets")
    ff = "encoder.block.0.layer.1.DenseReluDense."
    gated = ff + "wi_0.weight" in shapes
    d_ff = _need(path, shapes, ff + ("wi_0.weight" if gated else "wi.weight"), "feed-forward width")[0]
    per_layer_bias = attn.format(1) + "relative_attention_bias.weight" in shapes
    overrides = dict(overrides or {})
    kind = overrides.pop("model_type", None) or ("umt5" if per_layer_bias or layers == 1 else "t5")
    if kind not in ("umt5", "t5"):
        raise ValueError(f"model_type={kind!r} must be 'umt5' (Wan) or 't5' (CogVideoX).")
    config = dict(
        vocab_size=vocab, d_model=d_model, d_kv=inner // heads, d_ff=d_ff, num_layers=layers, num_heads=heads,
        relative_attention_num_buckets=buckets, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, is_encoder_decoder=False, use_cache=False,
    )
    config.update(overrides)
    return kind, config


def family_of_encoder(kind: str) -> str:
    """The family whose text encoder this is (Wan uses UMT5, CogVideoX T5 v1.1), by the family adapters."""
    from ..families import family_of_text_encoder

    family = family_of_text_encoder({"umt5": "UMT5EncoderModel", "t5": "T5EncoderModel"}[kind])
    if family is None:
        raise ValueError(f"No supported model family uses a {kind} text encoder.")
    return family.name


def _fp32_modules(model_cls, dtype: torch.dtype) -> frozenset[str]:
    """Module names transformers' ``from_pretrained`` keeps in float32 at ``dtype`` (T5's ``wo`` in fp16)."""
    keep = set(getattr(model_cls, "_keep_in_fp32_modules", None) or ()) if dtype == torch.float16 else set()
    if dtype in (torch.float16, torch.bfloat16):
        keep |= set(getattr(model_cls, "_keep_in_fp32_modules_strict", None) or ())
    return frozenset(keep)


def _state_dict(
    path: Path, prefix: str, dtype: torch.dtype, keep_fp32: frozenset[str] = frozenset()
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    tensors = load_tensors(path)
    spiece = tensors.pop(TOKENIZER_KEY, None)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in _EXTRA_KEYS or name.endswith(_EXTRA_SUFFIXES) or name.startswith("decoder."):
            continue
        if tensor.is_floating_point():
            scale = tensors.get(f"{key[: -len('.weight')]}.scale_weight") if key.endswith(".weight") else None
            tensor = tensor.to(torch.float32) * scale.to(torch.float32) if scale is not None else tensor
            tensor = tensor.to(torch.float32 if keep_fp32 & set(name.split(".")) else dtype)
        state[name] = tensor
    return state, spiece


def tokenizer_from_spiece(model: bytes | torch.Tensor):
    """A transformers T5Tokenizer (appends ``</s>``, as ComfyUI's SPieceTokenizer does) from sentencepiece bytes."""
    from transformers import T5Tokenizer

    data = model.cpu().numpy().tobytes() if isinstance(model, torch.Tensor) else bytes(model)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "spiece.model").write_bytes(data)  # the file name transformers' T5 tokenizer loads
        return T5Tokenizer.from_pretrained(tmp, extra_ids=0, legacy=True, model_max_length=512, local_files_only=True)


def _load_tokenizer(path: Path, tokenizer: str | Path | None, spiece: torch.Tensor | None):
    from transformers import AutoTokenizer

    beside = (path.with_name(path.stem + "_tokenizer"), path.parent / "tokenizer")
    if tokenizer is None:
        tokenizer = next((d for d in beside if (d / "tokenizer_config.json").is_file()), None)
    if tokenizer is None:
        if spiece is not None:
            return tokenizer_from_spiece(spiece)
        raise ValueError(
            f"{path} holds a text encoder but no tokenizer (no {TOKENIZER_KEY!r} tensor, which ComfyUI's UMT5 files "
            f"carry), none was given and none is beside it ({' or '.join(str(d) for d in beside)}). "
            f"{TOKENIZER_ADVICE}"
        )
    tok = Path(tokenizer).expanduser()
    if tok.is_file() and tok.suffix == ".model":
        return tokenizer_from_spiece(tok.read_bytes())
    if tok.is_dir() and (tok / "tokenizer" / "tokenizer_config.json").is_file():
        tok = tok / "tokenizer"
    if not (tok / "tokenizer_config.json").is_file():
        raise ValueError(f"Tokenizer {tok} is neither a folder with tokenizer_config.json nor a .model file. "
                         f"{TOKENIZER_ADVICE}")
    return AutoTokenizer.from_pretrained(tok, local_files_only=True)


def load_text_encoder_file(
    path: str | Path,
    *,
    tokenizer: str | Path | None = None,
    config: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, Any, str]:
    """(encoder, tokenizer, family) from one safetensors file of ComfyUI's text_encoders folder.

    The encoder is a transformers UMT5EncoderModel (Wan) or T5EncoderModel (CogVideoX) whose config comes from the
    shapes (``config`` overrides any value, e.g. ``{"model_type": "t5"}``). The tokenizer is ``tokenizer`` (a
    tokenizer folder or a sentencepiece .model file), else tokenizer files next to the file, else the file's own
    ``spiece_model``; without any, a ValueError says where to get one. Only safetensors are read.
    """
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    path = check_weight_file(path)
    shapes = read_shapes(path)
    prefix = _prefix(path, shapes)
    kind, cfg = encoder_config(path, shapes, config)
    tok = _load_tokenizer(path, tokenizer, None) if TOKENIZER_KEY not in shapes else None
    config_cls, model_cls = (UMT5Config, UMT5EncoderModel) if kind == "umt5" else (T5Config, T5EncoderModel)
    state, spiece = _state_dict(path, prefix, dtype, _fp32_modules(model_cls, dtype))
    if tok is None:
        tok = _load_tokenizer(path, tokenizer, spiece)
    if "shared.weight" not in state:
        state["shared.weight"] = state["encoder.embed_tokens.weight"]
    state["encoder.embed_tokens.weight"] = state["shared.weight"]  # tied in transformers' T5
    with torch.device("meta"):
        model = model_cls(config_cls(**cfg))
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ValueError(
            f"{path} does not fit a {kind.upper()} encoder built from its shapes: missing {len(missing)} tensors, "
            f"e.g. {', '.join(missing[:4])}."
        )
    unused = sorted(set(state) - expected)
    if unused:
        logger.info("Ignoring %d tensors of %s not in the encoder, e.g. %s", len(unused), path.name, unused[:3])
    model.load_state_dict({k: state[k] for k in expected}, strict=True, assign=True)
    model.tie_weights()
    logger.info("Loaded %s encoder from %s (%d layers, width %d)", kind.upper(), path.name, cfg["num_layers"],
                cfg["d_model"])
    return model.to(device).eval(), tok, family_of_encoder(kind)
