"""Key layouts of Wan2.1 and CogVideoX weights, in both directions.

- Wan transformer: the original repo / ComfyUI layout (``blocks.0.self_attn.q.weight``) is converted to diffusers
  by diffusers' own ``convert_wan_transformer_to_diffusers``; the inverse here writes such files (tests, export).
- Wan VAE: original layout (``decoder.upsamples.N`` flat, ``residual.{0,2,3,6}``) <-> diffusers (``up_blocks.B``
  with ``resnets``/``upsamplers``). Written for any ``num_res_blocks``: diffusers' converter assumes 2 (the
  released VAE), which is right for real files but not for small test VAEs.
- CogVideoX transformer: the SAT layout of the original release (fused ``query_key_value``, one adaLN
  modulation of 12 chunks per block, under ``model.diffusion_model.``) <-> diffusers.
"""

from __future__ import annotations

import re

import torch

from ..families.wan import WAN_VAE_RESNET_KEYS

# --------------------------------------------------------------------------------------------- Wan transformer
_WAN_T_TOP_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
    ("proj_out.", "head.head."),
)
_WAN_T_BLOCK_TO_ORIGINAL = (
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".to_out.0.", ".o."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
)


def wan_transformer_key_to_original(key: str) -> str:
    """diffusers ``WanTransformer3DModel`` key -> original Wan key (inverse of diffusers' converter)."""
    if key == "scale_shift_table":
        return "head.modulation"
    for new, old in _WAN_T_TOP_TO_ORIGINAL:
        if key.startswith(new):
            return old + key[len(new) :]
    for new, old in _WAN_T_BLOCK_TO_ORIGINAL:
        key = key.replace(new, old)
    key = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", key)
    # diffusers calls the cross-attention norm norm2 and the FFN norm norm3; the original swaps them.
    return re.sub(r"^(blocks\.\d+)\.norm([23])\.", lambda m: f"{m[1]}.norm{5 - int(m[2])}.", key)


def wan_transformer_to_original(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """A diffusers Wan transformer state dict in the original layout (``prefix`` e.g. "model.diffusion_model.")."""
    return {prefix + wan_transformer_key_to_original(k): v for k, v in state_dict.items()}


def wan_transformer_to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original (or ComfyUI ``model.diffusion_model.``-prefixed) Wan keys -> diffusers, via diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return convert_wan_transformer_to_diffusers(dict(state_dict))


# ------------------------------------------------------------------------------------------------------ Wan VAE
_RES_TO_DIFFUSERS = WAN_VAE_RESNET_KEYS
_RES_TO_ORIGINAL = {v: k for k, v in _RES_TO_DIFFUSERS.items()}
_VAE_FIXED_TO_DIFFUSERS = {
    "conv1.": "quant_conv.",
    "conv2.": "post_quant_conv.",
    "encoder.conv1.": "encoder.conv_in.",
    "decoder.conv1.": "decoder.conv_in.",
    "encoder.head.0.": "encoder.norm_out.",
    "encoder.head.2.": "encoder.conv_out.",
    "decoder.head.0.": "decoder.norm_out.",
    "decoder.head.2.": "decoder.conv_out.",
    "encoder.middle.0.": "encoder.mid_block.resnets.0.",
    "encoder.middle.1.": "encoder.mid_block.attentions.0.",
    "encoder.middle.2.": "encoder.mid_block.resnets.1.",
    "decoder.middle.0.": "decoder.mid_block.resnets.0.",
    "decoder.middle.1.": "decoder.mid_block.attentions.0.",
    "decoder.middle.2.": "decoder.mid_block.resnets.1.",
}
_VAE_FIXED_TO_ORIGINAL = {v: k for k, v in _VAE_FIXED_TO_DIFFUSERS.items()}


def _map_resnet_suffix(rest: str, table: dict[str, str]) -> str:
    return table.get(rest, rest)


def wan_vae_num_res_blocks(original_keys) -> int:
    """Residual blocks per stage of an original-layout Wan VAE: the index of the encoder's first resample."""
    resample = sorted(
        int(m[1]) for k in original_keys if (m := re.match(r"encoder\.downsamples\.(\d+)\.(resample|time_conv)\.", k))
    )
    if resample:
        return resample[0]
    blocks = {int(m[1]) for k in original_keys if (m := re.match(r"encoder\.downsamples\.(\d+)\.", k))}
    return len(blocks)


def wan_vae_key_to_diffusers(key: str, num_res_blocks: int) -> str:
    """Original Wan VAE key -> diffusers ``AutoencoderKLWan`` key."""
    for old, new in _VAE_FIXED_TO_DIFFUSERS.items():
        if key.startswith(old):
            rest = key[len(old) :]
            return new + (_map_resnet_suffix(rest, _RES_TO_DIFFUSERS) if ".mid_block.resnets." in new else rest)
    if m := re.match(r"encoder\.downsamples\.(\d+)\.(.+)$", key):
        return f"encoder.down_blocks.{m[1]}.{_map_resnet_suffix(m[2], _RES_TO_DIFFUSERS)}"
    if m := re.match(r"decoder\.upsamples\.(\d+)\.(.+)$", key):
        stride = num_res_blocks + 2  # (num_res_blocks + 1) resnets then one upsampler per stage
        block, index = divmod(int(m[1]), stride)
        if index <= num_res_blocks:
            return f"decoder.up_blocks.{block}.resnets.{index}.{_map_resnet_suffix(m[2], _RES_TO_DIFFUSERS)}"
        return f"decoder.up_blocks.{block}.upsamplers.0.{m[2]}"
    return key


def wan_vae_key_to_original(key: str, num_res_blocks: int) -> str:
    """diffusers ``AutoencoderKLWan`` key -> original Wan VAE key."""
    for new, old in _VAE_FIXED_TO_ORIGINAL.items():
        if key.startswith(new):
            rest = key[len(new) :]
            return old + (_map_resnet_suffix(rest, _RES_TO_ORIGINAL) if ".mid_block.resnets." in new else rest)
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.(.+)$", key):
        return f"encoder.downsamples.{m[1]}.{_map_resnet_suffix(m[2], _RES_TO_ORIGINAL)}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key):
        index = int(m[1]) * (num_res_blocks + 2) + int(m[2])
        return f"decoder.upsamples.{index}.{_map_resnet_suffix(m[3], _RES_TO_ORIGINAL)}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", key):
        return f"decoder.upsamples.{int(m[1]) * (num_res_blocks + 2) + num_res_blocks + 1}.{m[2]}"
    return key


def wan_vae_to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    nrb = wan_vae_num_res_blocks(state_dict)
    return {wan_vae_key_to_diffusers(k, nrb): v for k, v in state_dict.items()}


def wan_vae_to_original(state_dict: dict[str, torch.Tensor], num_res_blocks: int) -> dict[str, torch.Tensor]:
    return {wan_vae_key_to_original(k, num_res_blocks): v for k, v in state_dict.items()}


# -------------------------------------------------------------------------------- CogVideoX transformer (SAT)
_SAT_LAYER = {
    "input_layernorm": "norm1.norm",
    "attention.dense": "attn1.to_out.0",
    "post_attention_layernorm": "norm2.norm",
    "mlp.dense_h_to_4h": "ff.net.0.proj",
    "mlp.dense_4h_to_h": "ff.net.2",
}
_SAT_TOP = {
    "transformer.final_layernorm": "norm_final",
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "mixins.patch_embed.proj": "patch_embed.proj",
    "mixins.patch_embed.text_proj": "patch_embed.text_proj",
    "mixins.final_layer.norm_final": "norm_out.norm",
    "mixins.final_layer.linear": "proj_out",
    "mixins.final_layer.adaLN_modulation.1": "norm_out.linear",
}
# Tensors of the SAT release that diffusers recomputes (positional tables, rotary caches, unused embeddings).
_SAT_DROP = ("mixins.pos_embed.", "embed_tokens", "freqs_sin", "freqs_cos", "position_embedding")


def _adaln_split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # SAT packs 12 chunks: (shift, scale, gate) x (attn, mlp) for video, then the same for text. diffusers'
    # CogVideoXLayerNormZero norm1 takes video+text attention chunks (0:3, 6:9), norm2 the MLP ones.
    c = t.chunk(12, dim=0)
    return torch.cat(c[0:3] + c[6:9]), torch.cat(c[3:6] + c[9:12])


def cogvideox_sat_to_diffusers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CogVideoX SAT keys (``model.diffusion_model.`` prefix already stripped) -> diffusers keys and tensors."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if any(d in key for d in _SAT_DROP):
            continue
        if m := re.match(r"transformer\.layers\.(\d+)\.(.+)\.(weight|bias)$", key):
            i, name, wb = m.groups()
            if name == "attention.query_key_value":
                for part, chunk in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0), strict=True):
                    out[f"transformer_blocks.{i}.attn1.{part}.{wb}"] = chunk
                continue
            if name in _SAT_LAYER:
                out[f"transformer_blocks.{i}.{_SAT_LAYER[name]}.{wb}"] = value
                continue
        if m := re.match(r"mixins\.adaln_layer\.adaLN_modulations\.(\d+)\.1\.(weight|bias)$", key):
            n1, n2 = _adaln_split(value)
            out[f"transformer_blocks.{m[1]}.norm1.linear.{m[2]}"] = n1
            out[f"transformer_blocks.{m[1]}.norm2.linear.{m[2]}"] = n2
            continue
        if m := re.match(r"mixins\.adaln_layer\.(query|key)_layernorm_list\.(\d+)\.(weight|bias)$", key):
            out[f"transformer_blocks.{m[2]}.attn1.norm_{m[1][0]}.{m[3]}"] = value
            continue
        if m := re.match(r"(.+)\.(weight|bias)$", key):
            if m[1] in _SAT_TOP:
                out[f"{_SAT_TOP[m[1]]}.{m[2]}"] = value
                continue
        out[key] = value  # unknown: left as is so that it is reported as unexpected
    return out


def cogvideox_diffusers_to_sat(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`cogvideox_sat_to_diffusers` (without prefix); used to write SAT-layout test files."""
    layer = {v: k for k, v in _SAT_LAYER.items()}
    top = {v: k for k, v in _SAT_TOP.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = re.match(r"transformer_blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m and m[2] in ("attn1.to_q", "attn1.to_k", "attn1.to_v"):
            if m[2] == "attn1.to_q":
                qkv = [state_dict[f"transformer_blocks.{m[1]}.attn1.{p}.{m[3]}"] for p in ("to_q", "to_k", "to_v")]
                out[f"transformer.layers.{m[1]}.attention.query_key_value.{m[3]}"] = torch.cat(qkv)
        elif m and m[2] in ("norm1.linear", "norm2.linear"):
            if m[2] == "norm1.linear":
                a = state_dict[key].chunk(6)
                b = state_dict[f"transformer_blocks.{m[1]}.norm2.linear.{m[3]}"].chunk(6)
                packed = torch.cat(a[0:3] + b[0:3] + a[3:6] + b[3:6])
                out[f"mixins.adaln_layer.adaLN_modulations.{m[1]}.1.{m[3]}"] = packed
        elif m and m[2] in ("attn1.norm_q", "attn1.norm_k"):
            which = "query" if m[2].endswith("q") else "key"
            out[f"mixins.adaln_layer.{which}_layernorm_list.{m[1]}.{m[3]}"] = value
        elif m and m[2] in layer:
            out[f"transformer.layers.{m[1]}.{layer[m[2]]}.{m[3]}"] = value
        elif (t := re.match(r"(.+)\.(weight|bias)$", key)) and t[1] in top:
            out[f"{top[t[1]]}.{t[2]}"] = value
        else:
            out[key] = value
    return out
