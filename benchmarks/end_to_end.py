"""End-to-end timing of the headless pipeline on one GPU: text encoding, denoising and VAE decode for the
``baseline`` preset (dense, 50 steps, CFG) and the ``blade`` preset (ASA, 8 steps, no CFG), with peak memory.

The models are built with random weights from the full-size configs shipped in blade_ops/models/configs (the
text encoders from the UMT5-XXL / T5-XXL geometry below), so no download is needed; timings do not depend on the
weights. The BLADE LoRA is left out: merged, it costs nothing at run time.

``--compile`` compiles every transformer block (blade_ops.pipeline.compile) for both presets, before the
baseline's warm-up (installing ASA for blade afterwards makes the blocks recompile once, in blade's warm-up);
``--compile-vae`` also compiles the Wan VAE decoder (experimental: in this flow on torch 2.11 its second decode
recompiled, see docs/BENCHMARKS.md). All
compilation happens in the untimed warm-up runs, whose duration is reported (warm-up (s)); the timed run must not
compile anything new (``new_graphs_timed`` in the JSON, a warning otherwise). ``--fp8-linear`` times the blade
preset once more with fp8 (e4m3) linear layers in the blocks (row ``blade+fp8``; the baseline stays bf16).

    python benchmarks/end_to_end.py --variant wan2.1-t2v-1.3b --markdown runs/e2e_wan.md
    python benchmarks/end_to_end.py --variant wan2.1-t2v-1.3b --compile --json runs/e2e_wan_compiled.json
    python benchmarks/end_to_end.py --variant cogvideox-5b --baseline-steps 50 --json runs/e2e_cog.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blade_ops.attention import get_asa_handle  # noqa: E402
from blade_ops.families import get_family  # noqa: E402
from blade_ops.models.bundle import ModelBundle  # noqa: E402
from blade_ops.models.fp8_linear import install_fp8_linears  # noqa: E402
from blade_ops.models.tiny import build_word_tokenizer  # noqa: E402
from blade_ops.models.variants import get_variant, random_model  # noqa: E402
from blade_ops.pipeline import (  # noqa: E402
    DEFAULT_SIZES,
    Guidance,
    decode,
    denoise,
    get_preset,
    latent_grid,
    prepare_latents,
    prepare_model,
)
from blade_ops.pipeline.compile import COMPILE_MODES, compile_transformer, compile_vae_decoder  # noqa: E402
from blade_ops.sampling import make_sampler  # noqa: E402
from blade_ops.text import encode_prompts  # noqa: E402

logger = logging.getLogger("end_to_end")

# Encoder geometry of google/umt5-xxl (Wan) and google/t5-v1_1-xxl (CogVideoX): 24 layers, d_model 4096; keyed by
# the transformers class a family's text encoder is.
TEXT_ENCODERS = {
    "UMT5EncoderModel": ("UMT5Config", 256384),
    "T5EncoderModel": ("T5Config", 32128),
}
XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, relative_attention_num_buckets=32,
           relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0,
           eos_token_id=1, decoder_start_token_id=0)
PROMPT = "a red fox running through fresh snow at sunset, cinematic"


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast to ``dtype`` but keep the modules the class marks float32 (rope, time embedder, norms in Wan), as
    ``from_pretrained(torch_dtype=...)`` does."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if not any(k in name.split(".") for k in keep):
            for param in module.parameters(recurse=False):
                param.data = param.data.to(dtype)
            for key, buf in module.named_buffers(recurse=False):
                if buf.is_floating_point():
                    module._buffers[key] = buf.to(dtype)
    return model


def build_random_bundle(variant: str, dtype: torch.dtype, device: torch.device) -> ModelBundle:
    """Full-size transformer, VAE and text encoder with random weights, created directly on ``device``."""
    import transformers

    family = get_family(get_variant(variant).family)
    parts = {}
    with torch.device(device):
        for part in ("transformer", "vae"):
            parts[part] = _cast(random_model(variant, part), dtype).eval()
        model_cls = family.text_encoder_classes[0]
        config_cls, vocab = TEXT_ENCODERS[model_cls]
        config = getattr(transformers, config_cls)(vocab_size=vocab, **XXL)
        parts["text_encoder"] = getattr(transformers, model_cls)(config).to(dtype).eval()
    # The VAE stays in ``dtype`` as blade_ops.models loads it (bf16 decodes the Wan VAE 1.6x faster than fp32 on
    # H100: benchmarks/vae_decode.py).
    return ModelBundle(family=family, tokenizer=build_word_tokenizer(), variant=variant, dtype=dtype, **parts)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _stage(fn):
    """(result, seconds, peak GiB) of one stage."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _sync()
    start = time.perf_counter()
    out = fn()
    _sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return out, seconds, peak


def dense_sdpa_context(choice: str):
    """Pin the dense SDPA kernels every attention that ASA leaves dense uses (cross-attention, and every
    attention of the baseline). "cudnn" puts cuDNN first (fastest on H100), then flash; "default" is torch's."""
    if choice == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # MATH stays last as the fallback for the text encoder, whose position-bias mask no fused kernel takes.
    order = {"cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION],
             "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]}[choice] + [SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def mean_density(bundle: ModelBundle) -> float | None:
    """Mean kept-block fraction over the ASA layers in the last forward (None without ASA)."""
    handle = get_asa_handle(bundle.transformer)
    if handle is None:
        return None
    values = list(handle.layer_density().values())
    return sum(values) / len(values) if values else None


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (to check that the timed run compiles nothing)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def run_preset(bundle: ModelBundle, preset: str, size: dict, steps: int | None, args) -> dict:
    family = bundle.family
    p = get_preset(preset)
    guidance = Guidance(p.guidance(family), p.dynamic_guidance(family))
    negative = family.default_negative_prompt

    def once(n_steps):
        sampler = make_sampler(p.sampler, family, bundle.scheduler_config, steps=n_steps)
        embeds, t_text, m_text = _stage(lambda: encode_prompts(bundle, [PROMPT], negative, guidance=guidance.enabled))
        gen = torch.Generator("cpu").manual_seed(0)
        noise = prepare_latents(family, 1, latent_grid(family, **size), gen)
        latents, t_denoise, m_denoise = _stage(lambda: denoise(bundle, embeds, noise, sampler, guidance, None, gen))
        _, t_vae, m_vae = _stage(lambda: decode(bundle, latents, tiled=args.vae_tiling,
                                                       chunk_frames=args.vae_chunk))
        return {
            "steps": len(sampler.timesteps), "cfg": guidance.scale, "text_s": t_text, "denoise_s": t_denoise,
            "step_s": t_denoise / len(sampler.timesteps), "vae_s": t_vae, "total_s": t_text + t_denoise + t_vae,
            "peak_gib": max(m_text, m_denoise, m_vae), "peak_text_gib": m_text, "peak_denoise_gib": m_denoise,
            "peak_vae_gib": m_vae, "asa_density": mean_density(bundle),
        }

    logger.info("warm-up %s%s", preset, " (compiles the transformer blocks)" if args.compile else "")
    _sync()
    start = time.perf_counter()
    once(args.warmup_steps)
    _sync()
    warmup_s = time.perf_counter() - start
    logger.info("timing %s (warm-up took %.1f s)", preset, warmup_s)
    graphs = compiled_graphs()
    result = once(steps)
    result.update(warmup_s=warmup_s, new_graphs_timed=compiled_graphs() - graphs)
    if result["new_graphs_timed"]:
        logger.warning(
            "%s: %d graphs were compiled during the timed run, so its time includes compilation (see which guard "
            "failed with TORCH_LOGS=recompiles)", preset, result["new_graphs_timed"],
        )
    return result


def render_markdown(results: dict, command: str) -> str:
    env = results["env"]
    lines = [
        f"#### {results['variant']}",
        "",
        f"{results['variant']}, {results['size']['frames']}x{results['size']['height']}x{results['size']['width']},"
        f" {env['dtype']}, {env['gpu']}, torch {env['torch']}, diffusers {env['diffusers']}; random weights; "
        f"VAE tiling {'on' if results['vae_tiling'] else 'off'}, "
        f"Wan VAE chunk {results.get('vae_chunk') or 'default'}; dense SDPA {results['dense_sdpa']}; "
        f"ASA backend {results.get('asa_backend', '-')}; transformer blocks compiled: "
        f"{results.get('compile') or 'no'}; "
        f"Wan VAE decoder compiled: {'yes' if results.get('compile_vae') else 'no'}. "
        "Ratios are taken within this one run. Warm-up: the untimed "
        f"{results.get('warmup_steps', '-')}-step run before each timed one, which includes any compilation.",
        "",
        "| preset | steps | CFG | text enc (s) | denoise (s) | per step (s) | VAE decode (s) | total (s) | peak (GiB) "
        "| ASA density | denoise speed-up | end-to-end speed-up | warm-up (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = results["presets"].get("baseline")
    for name, r in results["presets"].items():
        den = f"{base['denoise_s'] / r['denoise_s']:.2f}x" if base else "-"
        speed = f"{base['total_s'] / r['total_s']:.2f}x" if base else "-"
        density = "dense" if r.get("asa_density") is None else f"{r['asa_density']:.3f}"
        lines.append(
            f"| {name} | {r['steps']} | {r['cfg']:g} | {r['text_s']:.2f} | {r['denoise_s']:.2f} | {r['step_s']:.3f} "
            f"| {r['vae_s']:.2f} | {r['total_s']:.2f} | {r['peak_gib']:.1f} | {density} | {den} | {speed} "
            f"| {r['warmup_s']:.1f} |"
        )
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="wan2.1-t2v-1.3b", help="a shipped variant, e.g. cogvideox-5b")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--presets", default="baseline,blade", help="comma-separated, timed in this order")
    parser.add_argument("--baseline-steps", type=int, default=50)
    parser.add_argument("--blade-steps", type=int, default=8)
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps of the untimed warm-up run per preset")
    parser.add_argument("--asa-backend", default="auto")
    parser.add_argument("--vae-tiling", action="store_true")
    parser.add_argument("--vae-chunk", type=int, default=None,
                        help="Wan latent frames per VAE decoder call (default: sized to the resolution; "
                        "1: diffusers' loop)")
    parser.add_argument("--dense-sdpa", default="cudnn", choices=["cudnn", "flash", "default"],
                        help="dense SDPA kernel order for the baseline and for the attention ASA leaves dense")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each transformer block, for every preset (compiled in the warm-up)")
    parser.add_argument("--compile-vae", action="store_true", help="also torch.compile the Wan VAE decoder")
    parser.add_argument("--compile-mode", default="default", choices=COMPILE_MODES)
    parser.add_argument("--fp8-linear", action="store_true",
                        help="after the presets, time blade once more with fp8 linear layers (row 'blade+fp8')")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--markdown", help="also write the markdown table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not torch.cuda.is_available():
        raise SystemExit("end_to_end.py measures GPU timings; no CUDA device is visible.")
    device, dtype = torch.device("cuda"), getattr(torch, args.dtype)
    bundle = build_random_bundle(args.variant, dtype, device)
    default = DEFAULT_SIZES[bundle.family.name]
    size = {k: getattr(args, k) or default[k] for k in default}
    import diffusers

    results = {
        "variant": args.variant, "size": size, "vae_tiling": args.vae_tiling, "vae_chunk": args.vae_chunk,
        "presets": {},
        "dense_sdpa": args.dense_sdpa, "warmup_steps": args.warmup_steps,
        "compile": f"mode {args.compile_mode}" if args.compile else None, "compile_vae": args.compile_vae,
        "env": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "diffusers": diffusers.__version__,
                "dtype": args.dtype},
    }
    steps = {"baseline": args.baseline_steps, "blade": args.blade_steps}
    # ASA changes the transformer for good: dense presets are timed first
    for preset in sorted(args.presets.split(","), key=lambda name: get_preset(name).sparse):
        if get_preset(preset).sparse:
            prepare_model(bundle, preset, backend=args.asa_backend)
            results["asa_backend"] = get_asa_handle(bundle.transformer).backend
        if args.compile:  # no-op after the first preset; ASA installed since then recompiles in its warm-up
            compile_transformer(bundle.transformer, mode=args.compile_mode)
        if args.compile_vae:
            compile_vae_decoder(bundle.vae, mode=args.compile_mode)
        with dense_sdpa_context(args.dense_sdpa):
            results["presets"][preset] = run_preset(bundle, preset, size, steps.get(preset), args)
        logger.info("%s: %s", preset, json.dumps(results["presets"][preset]))
    if args.fp8_linear:  # last: the fp8 layers stay on the (already sparse) transformer
        install_fp8_linears(bundle.transformer, device=device)
        with dense_sdpa_context(args.dense_sdpa):
            results["presets"]["blade+fp8"] = run_preset(bundle, "blade", size, steps["blade"], args)
        logger.info("blade+fp8: %s", json.dumps(results["presets"]["blade+fp8"]))
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    md = render_markdown(results, command)
    print(md)  # noqa: T201 (benchmark report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(md)


if __name__ == "__main__":
    main()
