"""BLADE inside ComfyUI's own model code and samplers on one GPU, against core's own 50-step CFG baseline.

Everything runs in-process through the functions core's nodes call: the transformer is core's WanModel built by
``comfy.sd.load_diffusion_model_state_dict`` (what Load Diffusion Model calls after reading the file) from random
weights of Wan2.1-T2V-1.3B in core's key layout; the text encoder is core's UMT5-XXL (CLIPLoader type wan's
``load_text_encoder_state_dicts``, random weights, a small SentencePiece model standing in for the tokenizer, the
512-token padding unchanged) driven as CLIPTextEncode drives it; the VAE is core's Wan2.1 VAE (VAELoader's ``VAE``,
random weights) decoded as VAE Decode decodes. Timings do not depend on the weights.

- baseline: ModelSamplingSD3 shift 3.0 (as core's node patches it), ``comfy.sample.sample`` (what KSampler calls)
  with uni_pc_bh2, scheduler simple, 50 steps, CFG 5.0 with a negative prompt; dense attention (core's default,
  PyTorch SDPA);
- blade: the pack's BLADE ASA (ComfyUI model) and BLADE LoRA (ComfyUI model) nodes on the same MODEL (a random
  rank-64 LoRA on the 240 attention projections, as BLADE releases; core merges it into the weights when it loads
  the model, so it costs nothing per step), ``comfy.sample.sample_custom`` (what SamplerCustomAdvanced calls) with
  BLADE Schedule's 8 sigmas and BLADE UniPC, CFG 1.0.

Each preset runs once untimed with 2 steps (loads the model, compiles the sparse kernels), then once timed.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/native_comfyui.py --json runs/native.json --markdown runs/native.md
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("native_comfyui")
DEVICE = torch.device("cuda")  # --smoke runs the same code on the CPU at toy size, to check it before GPU time

PROMPT = "a red fox running through fresh snow at sunset, cinematic"
NEGATIVE = "static, blurred details, worst quality, low quality"
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def import_comfy(cpu: bool = False):
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout")
    sys.path.insert(0, str(Path(path).resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    import comfy.model_management  # noqa: F401  (picks the GPU)
    import comfy.model_sampling
    import comfy.sample
    import comfy.samplers
    import comfy.sd
    import comfy.utils

    return comfy


def model_sampling_sd3(comfy, model, shift: float):
    """What core's ModelSamplingSD3 node does (its module imports core's nodes.py, whose imports need PyAV)."""

    class ModelSamplingAdvanced(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = ModelSamplingAdvanced(model.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)
    patched = model.clone()
    patched.add_object_patch("model_sampling", sampling)
    return patched


def clip_text_encode(clip, text: str):
    """What core's CLIPTextEncode node does."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def load_pack():
    """The repository imported as ComfyUI imports a custom node folder (package ``blade_pack``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("blade_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["blade_pack"] = module
    spec.loader.exec_module(module)
    return module


def random_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fan-in scaled random weights for every parameter (core builds layers without initialising them)."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g, device=p.device) / p[0].numel() ** 0.5)
            else:
                p.fill_(1.0 if name.endswith(("gamma", "weight")) else 0.0)
    return module


def core_transformer_sd(variant: str) -> dict[str, torch.Tensor]:
    """Random Wan weights from the pack's shipped diffusers config, in core's (original Wan) key layout, bf16."""
    from blade_pack.blade_ops.models.keymaps import wan_transformer_to_original
    from blade_pack.blade_ops.models.variants import random_model

    with DEVICE:
        model = random_model(variant, "transformer").to(torch.bfloat16)
    sd = wan_transformer_to_original(model.state_dict())
    del model
    return sd


def spiece_model_bytes() -> bytes:
    """A small SentencePiece model in place of UMT5's (only token ids reach the encoder; the length is padded)."""
    import sentencepiece as spm

    words = (PROMPT + " " + NEGATIVE + " the a of and in on with video scene light camera").split()
    sentences = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=out, vocab_size=48,
                                   hard_vocab_limit=False, model_type="unigram", minloglevel=2)
    return out.getvalue()


def core_text_encoder(comfy):
    from transformers import UMT5Config, UMT5EncoderModel

    with DEVICE:
        encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL)).to(torch.bfloat16)
    sd = {k: v for k, v in encoder.state_dict().items()}
    del encoder
    sd["spiece_model"] = torch.frombuffer(bytearray(spiece_model_bytes()), dtype=torch.uint8)
    return comfy.sd.load_text_encoder_state_dicts([sd], clip_type=comfy.sd.CLIPType.WAN)


def core_vae(comfy):
    import comfy.ldm.wan.vae as wan_vae

    ddconfig = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
                "temperal_downsample": [False, True, True], "dropout": 0.0}
    with DEVICE:
        vae = random_(wan_vae.WanVAE(**ddconfig), seed=2)
    sd = {k: v.to(torch.bfloat16) for k, v in vae.state_dict().items()}
    del vae
    return comfy.sd.VAE(sd=sd)


def blade_lora_file(sd: dict[str, torch.Tensor], path: Path, rank: int = 64) -> Path:
    """A random BLADE-shaped LoRA (diffusers naming, rank 64 on q/k/v/o of both attentions of every block)."""
    from safetensors.torch import save_file

    blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    tensors = {}
    g = torch.Generator().manual_seed(3)
    for i in range(blocks):
        for attn, core in (("attn1", "self_attn"), ("attn2", "cross_attn")):
            for proj, key in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o")):
                out_f, in_f = sd[f"blocks.{i}.{core}.{key}.weight"].shape
                name = f"transformer.blocks.{i}.{attn}.{proj}"
                tensors[f"{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=g) * 0.01
                tensors[f"{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.01
    save_file(tensors, str(path))
    return path


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    return out, time.perf_counter() - start


def run_preset(comfy, preset: str, model, clip, vae, latent, args) -> dict:
    """Text encoding, sampling and decoding of one preset, as core's nodes do them; returns seconds and memory."""
    from blade_pack.nodes.native_schedule import BladeSchedule, sample_blade_unipc

    def encode(text):
        if clip is None:  # --smoke: core builds UMT5 only at XXL size, too large for a CPU check
            return [[torch.zeros(1, 512, 4096), {}]]
        return clip_text_encode(clip, text)

    def sample(steps):
        if preset == "baseline":
            return comfy.sample.sample(
                model, noise, steps, args.baseline_cfg, "uni_pc_bh2", "simple", positive, negative, latent,
                denoise=1.0, disable_pbar=True, seed=0)
        sigmas = BladeSchedule().sigmas(steps, 3.0)[0]
        sampler = comfy.samplers.KSAMPLER(sample_blade_unipc)
        return comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, positive, negative, latent,
                                          disable_pbar=True, seed=0)

    noise = comfy.sample.prepare_noise(latent, 0)
    positive, negative = encode(PROMPT), encode(NEGATIVE)
    sample(2)  # warm-up: loads the model, compiles the sparse kernels for this shape
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    texts = [PROMPT, NEGATIVE] if preset == "baseline" else [PROMPT]
    conds, t_text = timed(lambda: [encode(t) for t in texts])
    positive, negative = conds[0], (conds[1] if len(conds) > 1 else negative)
    steps = args.baseline_steps if preset == "baseline" else 8
    samples, t_denoise = timed(lambda: sample(steps))
    images, t_decode = timed(lambda: vae.decode(samples))
    assert torch.isfinite(images).all(), "non-finite frames"
    row = {"preset": preset, "steps": steps, "cfg": args.baseline_cfg if preset == "baseline" else 1.0,
           "text_s": t_text, "denoise_s": t_denoise, "per_step_s": t_denoise / steps, "decode_s": t_decode,
           "total_s": t_text + t_denoise + t_decode,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else float("nan"),
           "frames": tuple(images.shape)}
    override = model.model_options["transformer_options"].get("optimized_attention_override")
    state = getattr(override, "blade_asa_state", None)
    if state is not None and state.last_report is not None:
        row["asa_density"] = state.last_report.mean_density
        row["asa_calls"] = state.last_report.sparse_calls
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="wan2.1-t2v-1.3b")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--baseline-steps", type=int, default=50)
    parser.add_argument("--baseline-cfg", type=float, default=5.0)
    parser.add_argument("--backend", default="auto", help="ASA kernel backend")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/blade_native_bench"))
    parser.add_argument("--smoke", action="store_true",
                        help="check the script on the CPU (zero conditioning instead of UMT5-XXL); pass a tiny size "
                        "and steps")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    global DEVICE
    if args.smoke:
        DEVICE = torch.device("cpu")
    comfy = import_comfy(cpu=args.smoke)
    pack = load_pack()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sd = core_transformer_sd(args.variant)
    lora = blade_lora_file(sd, args.workdir / "blade_lora.safetensors")
    base = comfy.sd.load_diffusion_model_state_dict(sd)
    del sd
    clip = None if args.smoke else core_text_encoder(comfy)
    vae = core_vae(comfy)
    latent = torch.zeros(1, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)

    mapping = pack.NODE_CLASS_MAPPINGS
    baseline_model = model_sampling_sd3(comfy, base, 3.0)
    asa_model = mapping["BladeNativeASA"]().patch(base, "family defaults", args.backend)[0]
    blade_model = mapping["BladeNativeLoRA"]().patch(asa_model, str(lora), 1.0)[0]
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        rows = [run_preset(comfy, "baseline", baseline_model, clip, vae, latent, args)]
        rows.append(run_preset(comfy, "blade", blade_model, clip, vae, latent, args))
    for row in rows:
        row["denoise_speedup"] = rows[0]["denoise_s"] / row["denoise_s"]
        row["end_to_end_speedup"] = rows[0]["total_s"] / row["total_s"]
    commit = comfyui_commit()
    gpu = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
    meta = {"gpu": gpu, "torch": torch.__version__, "comfyui_commit": commit,
            "variant": args.variant, "size": [args.frames, args.height, args.width],
            "command": "python benchmarks/native_comfyui.py " + shlex.join(argv or sys.argv[1:])}
    try:
        import comfy_kitchen

        meta["comfy_kitchen"] = getattr(comfy_kitchen, "__version__", "installed")
    except ImportError:
        meta["comfy_kitchen"] = "not installed"
    result = {"meta": meta, "rows": rows}
    write_report(result, args.json, args.markdown, markdown)
    return 0


def comfyui_commit() -> str:
    """The ComfyUI checkout's commit (git), else COMFYUI_COMMIT (a copy without .git), else "unknown"."""
    found = subprocess.run(["git", "-C", os.environ["COMFYUI_PATH"], "rev-parse", "HEAD"], capture_output=True,
                           text=True).stdout.strip()
    return found or os.environ.get("COMFYUI_COMMIT", "unknown")


def write_report(result: dict, json_path: Path | None, markdown_path: Path | None, render) -> None:
    """Print the result as JSON and write it (JSON) and its table (``render(result)``) where asked."""
    print(json.dumps(result, indent=2))  # noqa: T201 (benchmark report)
    for path, text in ((json_path, lambda: json.dumps(result, indent=2)), (markdown_path, lambda: render(result))):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text())


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        f"{meta['variant']}, {'x'.join(map(str, meta['size']))}, bf16, {meta['gpu']}, torch {meta['torch']}, ComfyUI "
        f"{meta['comfyui_commit'][:7]}, comfy-kitchen {meta['comfy_kitchen']}; random weights; core's own WanModel, "
        "samplers, UMT5-XXL and Wan VAE in-process. Ratios within this one run.",
        "",
        "| preset | steps | CFG | text enc (s) | denoise (s) | per step (s) | VAE decode (s) | total (s) | peak (GiB) "
        "| ASA density | denoise speed-up | end-to-end speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        density = f"{r['asa_density']:.3f}" if "asa_density" in r else "dense"
        lines.append(
            f"| {r['preset']} | {r['steps']} | {r['cfg']:g} | {r['text_s']:.2f} | {r['denoise_s']:.2f} | "
            f"{r['per_step_s']:.3f} | {r['decode_s']:.2f} | {r['total_s']:.2f} | {r['peak_gib']:.1f} | {density} | "
            f"{r['denoise_speedup']:.2f}x | {r['end_to_end_speedup']:.2f}x |"
        )
    lines += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
