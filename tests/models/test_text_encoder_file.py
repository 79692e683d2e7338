"""Contract of single-file text encoders in ComfyUI's layout: the config comes from the shapes, the embedded
sentencepiece tokenizer (``spiece_model``) is used, the embeddings equal the original encoder's, scaled fp8 files
are dequantised, and a file without a tokenizer or of another kind is refused with a message that says what to do."""

from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import save_file

from blade_ops.families import get_family
from blade_ops.models.bundle import ModelBundle
from blade_ops.models.text_encoder_file import encoder_config, load_text_encoder_file
from blade_ops.models.tiny import TINY_VOCAB_WORDS, build_word_tokenizer, tiny_text_encoder
from blade_ops.text import encode_text

PROMPTS = ["a red ball bouncing on the street", "a cat flying over the sea at night"]
TINY_DISTANCE = {"relative_attention_max_distance": 16}  # the tiny encoders' value; shapes cannot show it


def comfy_layout(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The encoder's tensors under ComfyUI's names (comfy/text_encoders/t5.py: no separate embed_tokens)."""
    return {k: v.clone().contiguous() for k, v in encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}


@pytest.fixture(scope="module")
def spiece_bytes() -> bytes:
    """A tiny sentencepiece model with T5's special ids (pad 0, eos 1, unk 2, no bos), trained here."""
    import sentencepiece as spm

    sentences = [" ".join(TINY_VOCAB_WORDS[i:i + 9]) for i in range(0, len(TINY_VOCAB_WORDS), 3)] * 4
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=out, vocab_size=96, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    return out.getvalue()


def _embeds(family: str, encoder, tokenizer) -> torch.Tensor:
    return encode_text(ModelBundle(get_family(family), text_encoder=encoder, tokenizer=tokenizer), PROMPTS)


def test_umt5_file_with_embedded_tokenizer_equals_original(tmp_path, spiece_bytes):
    import sentencepiece as spm

    from blade_ops.models.text_encoder_file import tokenizer_from_spiece

    sp = spm.SentencePieceProcessor(model_proto=spiece_bytes)
    original = tiny_text_encoder("wan", vocab_size=sp.get_piece_size(), seed=3)
    tensors = comfy_layout(original)
    tensors["spiece_model"] = torch.frombuffer(bytearray(spiece_bytes), dtype=torch.uint8)  # as ComfyUI stores it
    path = tmp_path / "umt5_tiny.safetensors"
    save_file(tensors, path)

    encoder, tokenizer, family = load_text_encoder_file(path, config=TINY_DISTANCE, dtype=torch.float32)
    assert family == "wan" and type(encoder).__name__ == "UMT5EncoderModel"
    assert encoder.config.num_layers == 2 and encoder.config.num_heads == 4 and encoder.config.d_kv == 8
    # ComfyUI's SPieceTokenizer: sentencepiece ids, then </s> (add_eos=True)
    assert tokenizer(PROMPTS[0]).input_ids == sp.encode(PROMPTS[0]) + [1]
    reference = _embeds("wan", original, tokenizer_from_spiece(spiece_bytes))
    ours = _embeds("wan", encoder, tokenizer)
    assert ours.shape == (2, 512, 32) and torch.equal(ours, reference)


def test_t5_file_takes_the_tokenizer_folder_beside_it(tmp_path):
    word_tokenizer = build_word_tokenizer()
    original = tiny_text_encoder("cogvideox", vocab_size=len(word_tokenizer), seed=4)
    path = tmp_path / "t5xxl_tiny.safetensors"
    save_file(comfy_layout(original), path)
    kind, cfg = encoder_config(path)
    assert kind == "t5" and cfg["vocab_size"] == len(word_tokenizer) and cfg["feed_forward_proj"] == "gated-gelu"

    with pytest.raises(ValueError) as err:
        load_text_encoder_file(path, dtype=torch.float32)
    message = str(err.value)
    assert str(path) in message and "spiece_model" in message and "no tokenizer" in message
    assert "t5xxl_tiny_tokenizer" in message and "CLIPLoader + CLIPTextEncode" in message

    word_tokenizer.save_pretrained(tmp_path / "t5xxl_tiny_tokenizer")
    encoder, tokenizer, family = load_text_encoder_file(path, config=TINY_DISTANCE, dtype=torch.float32)
    assert family == "cogvideox" and type(encoder).__name__ == "T5EncoderModel"
    assert torch.equal(_embeds("cogvideox", encoder, tokenizer), _embeds("cogvideox", original, word_tokenizer))
    explicit, _, _ = load_text_encoder_file(path, tokenizer=tmp_path / "t5xxl_tiny_tokenizer", config=TINY_DISTANCE,
                                            dtype=torch.bfloat16)
    assert explicit.dtype == torch.bfloat16


def test_scaled_fp8_and_prefixed_files(tmp_path, spiece_bytes):
    original = tiny_text_encoder("wan", vocab_size=96, seed=5)
    tensors = {}
    for key, value in comfy_layout(original).items():
        if key.endswith(("q.weight", "wo.weight")):
            scale = value.abs().max() / 448.0
            tensors[key] = (value / scale).to(torch.float8_e4m3fn)
            tensors[key.replace(".weight", ".scale_weight")] = scale.reshape(())
        else:
            tensors[key] = value
    tensors["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    tensors = {f"text_encoders.umt5xxl.transformer.{k}": v for k, v in tensors.items()}
    tensors["spiece_model"] = torch.frombuffer(bytearray(spiece_bytes), dtype=torch.uint8)
    path = tmp_path / "umt5_fp8_scaled.safetensors"
    save_file(tensors, path)
    encoder, _, _ = load_text_encoder_file(path, config=TINY_DISTANCE, dtype=torch.float32)
    key = "encoder.block.1.layer.0.SelfAttention.q.weight"
    prefixed = f"text_encoders.umt5xxl.transformer.{key}"
    expected = tensors[prefixed].float() * tensors[prefixed.replace(".weight", ".scale_weight")]
    assert torch.equal(encoder.state_dict()[key], expected)
    torch.testing.assert_close(encoder.state_dict()[key], original.state_dict()[key], rtol=0.07, atol=1e-3)


def test_other_files_are_refused_by_name(tmp_path):
    path = tmp_path / "not_t5.safetensors"
    save_file({"model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4)}, path)
    with pytest.raises(ValueError, match=r"not_t5.safetensors is not a T5/UMT5 text encoder: expected encoder keys"):
        load_text_encoder_file(path)
    pickle = tmp_path / "umt5.pt"
    torch.save({"shared.weight": torch.zeros(2, 2)}, pickle)
    with pytest.raises(ValueError, match="pickle"):
        load_text_encoder_file(pickle)
    broken = tmp_path / "broken.safetensors"
    encoder = tiny_text_encoder("wan", vocab_size=64)
    save_file({k: v for k, v in comfy_layout(encoder).items() if "block.1.layer.1" not in k}, broken)
    build_word_tokenizer().save_pretrained(tmp_path / "tokenizer")  # found beside the file
    with pytest.raises(ValueError, match="broken.safetensors does not fit a UMT5 encoder built from its shapes"):
        load_text_encoder_file(broken)
    with pytest.raises(ValueError, match="neither a folder with tokenizer_config.json nor a .model file"):
        load_text_encoder_file(broken, tokenizer=tmp_path / "missing")


def test_model_bundle_takes_a_text_encoder_file(tmp_path, spiece_bytes, tiny_folder):
    """``load_model_bundle(..., text_encoder_path=<file>)`` (the CLI's --text-encoder) reads ComfyUI's layout."""
    import sentencepiece as spm
    from transformers import UMT5Config, UMT5EncoderModel

    from blade_ops.models import load_model_bundle
    from blade_ops.models.text_encoder_file import tokenizer_from_spiece

    vocab = spm.SentencePieceProcessor(model_proto=spiece_bytes).get_piece_size()
    torch.manual_seed(5)
    original = UMT5EncoderModel(UMT5Config(
        vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
        relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0,
    )).eval()
    tensors = comfy_layout(original)
    tensors["spiece_model"] = torch.frombuffer(bytearray(spiece_bytes), dtype=torch.uint8)
    path = tmp_path / "umt5_xxl_tiny.safetensors"
    save_file(tensors, path)

    bundle = load_model_bundle(tiny_folder("wan"), text_encoder_path=path, dtype=torch.float32)
    assert bundle.sources["text_encoder"] == str(path)
    reference = _embeds("wan", original, tokenizer_from_spiece(spiece_bytes))
    assert torch.equal(encode_text(bundle, PROMPTS), reference)


@pytest.mark.parametrize("family", ["wan", "cogvideox"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_file_keeps_the_same_modules_in_fp32_as_from_pretrained(tmp_path, family, dtype):
    """T5's feed-forward output (``wo``) overflows in fp16; transformers keeps it in fp32 there, and so must the file
    loader, or fp16 embeddings differ from (and can be inf/NaN where) the folder's are fine."""
    word_tokenizer = build_word_tokenizer()
    original = tiny_text_encoder(family, vocab_size=len(word_tokenizer), seed=5)
    path = tmp_path / "encoder.safetensors"
    save_file(comfy_layout(original), path)
    word_tokenizer.save_pretrained(tmp_path / "encoder_tokenizer")
    original.save_pretrained(tmp_path / "folder")
    reference = type(original).from_pretrained(tmp_path / "folder", dtype=dtype)

    encoder, tokenizer, _ = load_text_encoder_file(path, config=TINY_DISTANCE, dtype=dtype)
    dtypes = {n: p.dtype for n, p in encoder.named_parameters()}
    assert dtypes == {n: p.dtype for n, p in reference.named_parameters()}
    if dtype == torch.float16:
        assert dtypes["encoder.block.0.layer.1.DenseReluDense.wo.weight"] == torch.float32
    assert torch.equal(_embeds(family, encoder, tokenizer), _embeds(family, reference, word_tokenizer))
