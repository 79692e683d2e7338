"""Tiny, randomly initialised Wan and CogVideoX components with the real architectures.

No weights can be fetched at run time, so tests, the ``--demo`` command and the toy training domain build
their models here. Everything goes through the same diffusers classes as the full-size models; only the
widths and depths are small. The tokenizer is a word-level tokenizer built in memory, saved in the
``tokenizers`` JSON format that ``AutoTokenizer`` reads back offline.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..families import get_family

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
    """The family's text encoder class (UMT5 for Wan, T5 for CogVideoX) with two layers."""
    import transformers

    encoder_class = get_family(family).text_encoder_classes[0]
    config_class = getattr(transformers, encoder_class.replace("EncoderModel", "Config"))
    torch.manual_seed(seed)
    kwargs = dict(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    return getattr(transformers, encoder_class)(config_class(**kwargs)).eval()


def tiny_transformer_config(family: str, text_dim: int = 32) -> dict:
    """Transformer config with the real architecture at toy width (2 layers, 2 heads)."""
    return get_family(family).tiny_transformer_config(text_dim)


def tiny_transformer(family: str, seed: int = 0, text_dim: int = 32):
    return get_family(family).tiny_transformer(seed, text_dim)


def tiny_vae(family: str, seed: int = 0):
    return get_family(family).tiny_vae(seed)


def tiny_scheduler(family: str):
    """The family's stock baseline scheduler (Wan: UniPC flow shift 3; CogVideoX: DPM)."""
    return get_family(family).tiny_scheduler()


def tiny_components(family: str, seed: int = 0) -> dict:
    """All parts of a text-to-video model, keyed like a diffusers pipeline folder (a family with several
    transformers adds the others under their expert names, e.g. ``transformer_2``)."""
    tokenizer = build_word_tokenizer()
    return {
        "transformer": tiny_transformer(family, seed),
        **get_family(family).tiny_experts(seed),
        "vae": tiny_vae(family, seed + 1),
        "text_encoder": tiny_text_encoder(family, vocab_size=len(tokenizer), seed=seed + 2),
        "tokenizer": tokenizer,
        "scheduler": tiny_scheduler(family),
    }


def save_tiny_diffusers_folder(family: str, path: str | Path, seed: int = 0) -> Path:
    """Write a diffusers-format folder (model_index.json + one subfolder per part, safetensors only)."""
    import diffusers

    path = Path(path)
    parts = tiny_components(family, seed)
    fam = get_family(family)
    pipeline = getattr(diffusers, fam.pipeline_classes[0])(**parts, **fam.pipeline_kwargs())
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def tiny_video_size(family: str) -> dict:
    """A small size the tiny models accept: a 2x4x4 token grid for Wan, 3x4x4 for CogVideoX."""
    fam = get_family(family)
    return fam.size_dict(fam.tiny_size)
