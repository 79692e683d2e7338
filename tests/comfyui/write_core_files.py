"""Write the model files the workflows on ComfyUI's own loaders name, at tiny size where core's loaders allow it.

    python tests/comfyui/write_core_files.py MODELS_DIR

Runs with the Python that runs ComfyUI (the VAEs are built from core's own classes, because core's VAELoader
builds the released geometry whatever a file holds: width 96 for Wan2.1, 160/256 for Wan2.2; random weights).
Core's CLIPLoader builds Wan's UMT5 only at XXL geometry, so the text encoder here is a tiny UMT5 of width 4096 in a
diffusers folder for the pack's text-encoder loader; the server test feeds its embeddings to core's samplers.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import core_wan as cw  # noqa: E402

DIFFUSION_MODELS = {  # file name in the workflows -> (tiny variant, file format)
    "wan2.1_t2v_1.3B_bf16.safetensors": ("t2v", "bf16"),
    "wan2.1_t2v_14B_fp8_scaled.safetensors": ("t2v", "fp8_scaled"),
    "wan2.2_ti2v_5B_fp16.safetensors": ("ti2v_5b", "fp16"),
}
LORA = "blade_wan2.1_t2v_1.3B_8step.safetensors"
TEXT_ENCODER_FOLDER = "tiny_umt5_width4096"
LORA_ASA = {"tau": 0.9, "min_ratio": 0.2, "max_ratio": 0.33, "num_keep": 16, "sample_gap": 20}


def _random_init(module: torch.nn.Module, seed: int) -> None:
    """Core builds its layers without initialising them; give every weight a fan-in scaled normal draw."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.fill_(1.0 if name.endswith("gamma") else 0.0)


def write_vaes(root: Path) -> None:
    cw.import_comfy()  # ComfyUI from $COMFYUI_PATH, on the CPU
    import comfy.ldm.wan.vae as wan21
    import comfy.ldm.wan.vae2_2 as wan22
    from safetensors.torch import save_file

    common = {"dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [], "dropout": 0.0,
              "temperal_downsample": [False, True, True]}
    for name, cls, config in (("wan_2.1_vae.safetensors", wan21.WanVAE, {"dim": 96, "z_dim": 16}),
                              ("wan2.2_vae.safetensors", wan22.WanVAE, {"dim": 160, "dec_dim": 256, "z_dim": 48})):
        path = root / "vae" / name
        if path.is_file():
            continue
        vae = cls(**config, **common)
        _random_init(vae, seed=len(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in vae.state_dict().items()}, str(path))


def write_transformers_and_lora(root: Path) -> None:
    from blade_ops.lora import save_lora

    for name, (variant, fmt) in DIFFUSION_MODELS.items():
        path = root / "diffusion_models" / name
        if not path.is_file():
            cw.save_core_file(cw.tiny_diffusers_wan(variant, seed=7), path, fmt)
    path = root / "loras" / LORA
    if not path.is_file():
        model = cw.tiny_diffusers_wan("t2v", seed=7)
        g = torch.Generator().manual_seed(11)
        state = {}
        for module_name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and module_name.endswith((".to_q", ".to_k", ".to_v", ".to_out.0")):
                state[f"{module_name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=g) * 0.05
                state[f"{module_name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=g) * 0.05
        path.parent.mkdir(parents=True, exist_ok=True)
        save_lora(path, state, {"family": "wan", "rank": 4, "alpha": 4, "steps": 8, "asa": LORA_ASA})


def write_text_encoder(root: Path) -> None:
    from diffusers import WanPipeline

    from blade_ops.models.tiny import build_word_tokenizer, tiny_components, tiny_text_encoder

    folder = root / "diffusers" / TEXT_ENCODER_FOLDER
    if (folder / "model_index.json").is_file():
        return
    parts = tiny_components("wan")
    tokenizer = build_word_tokenizer()
    parts["text_encoder"] = tiny_text_encoder("wan", vocab_size=len(tokenizer), d_model=4096)
    WanPipeline(**parts).save_pretrained(folder, safe_serialization=True)


def main(root: Path) -> None:
    write_transformers_and_lora(root)
    write_text_encoder(root)
    write_vaes(root)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
