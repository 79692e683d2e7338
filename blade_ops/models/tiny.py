"""Tiny, randomly initialised Wan and CogVideoX components with the real architectures.

No weights can be fetched at run time, so tests, the ``--demo`` command and the toy training domain build
their models here. Everything goes through the same diffusers classes as the full-size models; only the
widths and depths are small. The tokenizer is a word-level tokenizer built in memory, saved in the
``tokenizers`` JSON format that ``AutoTokenizer`` reads back offline.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_VOCAB_WORDS = (
    "a an the of and in on with to at over under red green blue yellow white black orange purple cyan magenta "
    "circle square triangle ball box star cat dog bird car tree river city sky sea mountain forest street "
    "moving bouncing sliding rolling flying walking running spinning fast slow left right up down small big "
    "video scene sunset night day light dark camera pan zoom close wide shot beautiful low quality blurry "
    "static worst bright overexposed"
).split()


def build_word_tokenizer(words: tuple[str, ...] | list[str] = TINY_VOCAB_WORDS):
    """A T5-style tokenizer (pad=0, eos=1, unk=2) over a fixed word list, appending ``</s>`` like T5."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def tiny_text_encoder(family: str, vocab_size: int, seed: int = 0, d_model: int = 32):
    """UMT5 (Wan) or T5 (CogVideoX) encoder with two layers."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    kwargs = dict(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    if family == "wan":
        return UMT5EncoderModel(UMT5Config(**kwargs)).eval()
    return T5EncoderModel(T5Config(**kwargs)).eval()


def tiny_transformer_config(family: str, text_dim: int = 32) -> dict:
    """Transformer config with the real architecture at toy width (2 layers, 2 heads)."""
    if family == "wan":
        return dict(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=text_dim, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        )
    if family == "cogvideox":
        # CogVideoX-5B layout (rotary positions, no learned positional table) at toy width.
        return dict(
            num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, time_embed_dim=8,
            text_embed_dim=text_dim, num_layers=2, sample_width=8, sample_height=8, sample_frames=9,
            patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16,
            use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False,
        )
    raise ValueError(f"Unknown family {family!r}; valid: 'wan', 'cogvideox'.")


def tiny_transformer(family: str, seed: int = 0, text_dim: int = 32):
    from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

    torch.manual_seed(seed)
    cls = WanTransformer3DModel if family == "wan" else CogVideoXTransformer3DModel
    return cls(**tiny_transformer_config(family, text_dim)).eval()


def tiny_vae(family: str, seed: int = 0):
    from diffusers import AutoencoderKLCogVideoX, AutoencoderKLWan

    torch.manual_seed(seed)
    if family == "wan":
        return AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).eval()
    return AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=2,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), temporal_compression_ratio=4,
    ).eval()


def tiny_scheduler(family: str):
    """The family's stock baseline scheduler (Wan: UniPC flow shift 3; CogVideoX: DPM)."""
    from diffusers import CogVideoXDPMScheduler, UniPCMultistepScheduler

    if family == "wan":
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return CogVideoXDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
        rescale_betas_zero_snr=True, snr_shift_scale=1.0, timestep_spacing="trailing", clip_sample=False,
        set_alpha_to_one=True,
    )


def tiny_components(family: str, seed: int = 0) -> dict:
    """All five parts of a text-to-video model, keyed like a diffusers pipeline folder."""
    tokenizer = build_word_tokenizer()
    return {
        "transformer": tiny_transformer(family, seed),
        "vae": tiny_vae(family, seed + 1),
        "text_encoder": tiny_text_encoder(family, vocab_size=len(tokenizer), seed=seed + 2),
        "tokenizer": tokenizer,
        "scheduler": tiny_scheduler(family),
    }


def save_tiny_diffusers_folder(family: str, path: str | Path, seed: int = 0) -> Path:
    """Write a diffusers-format folder (model_index.json + one subfolder per part, safetensors only)."""
    from diffusers import CogVideoXPipeline, WanPipeline

    path = Path(path)
    parts = tiny_components(family, seed)
    pipe_cls = WanPipeline if family == "wan" else CogVideoXPipeline
    pipe = pipe_cls(**parts)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def tiny_video_size(family: str) -> dict:
    """A small size the tiny models accept: a 2x4x4 token grid for Wan, 3x4x4 for CogVideoX."""
    return {"width": 64, "height": 64, "frames": 5 if family == "wan" else 9}

