"""Command line: make a video from text with a Wan2.1, Wan2.2 or CogVideoX model.

    python -m blade_ops.generate --model /models/Wan2.1-T2V-1.3B-Diffusers --lora blade_wan.safetensors \\
        --prompt "a red fox running through snow" --output outputs/fox.mp4
    python -m blade_ops.generate --family wan2.2-t2v-a14b --transformer high_noise.safetensors \\
        --transformer-2 low_noise.safetensors --vae wan_2.1_vae.safetensors --text-encoder umt5_xxl_fp16.safetensors \\
        --preset baseline --prompt "a red fox running through snow"
    python -m blade_ops.generate --demo          # tiny random model built on the fly, no weights needed
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Only torch-free modules here: --help and every argument error answer before torch is imported (seconds), and
# every request field is checked before any weights load (minutes for a real model).
from .families import WAN, check_video_size, family_names, get_family
from .validation import (
    DTYPE_NAMES,
    PRESET_NAMES,
    SAMPLER_NAMES,
    check_eta,
    check_guidance,
    check_lora_path,
    check_output_path,
    check_positive_int,
    check_prompts,
    check_seed,
    check_shift,
    check_weight_path,
)

if TYPE_CHECKING:
    import torch

    from .models.bundle import ModelBundle
    from .pipeline import GenerationRequest

logger = logging.getLogger("blade_ops.generate")

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m blade_ops.generate", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("model")
    src.add_argument("--model", help="diffusers model folder (model_index.json + transformer/, vae/, ...)")
    src.add_argument("--transformer", help="transformer single file (.safetensors), instead of --model's")
    src.add_argument(
        "--transformer-2",
        help="the second transformer's single file of a two-expert model (Wan2.2 A14B: the low-noise expert; "
        "--transformer is the high-noise one)",
    )
    src.add_argument("--vae", help="VAE file or folder (needed with --transformer unless --model gives it)")
    src.add_argument(
        "--text-encoder",
        help="text encoder: diffusers folder or text_encoders .safetensors file (with --transformer, unless --model)",
    )
    src.add_argument("--family", choices=family_names(), help="model family (detected when omitted)")
    src.add_argument("--demo", action="store_true", help="use a tiny random Wan model (no weights; for smoke tests)")
    src.add_argument("--lora", help="BLADE LoRA file (.safetensors)")
    src.add_argument("--lora-strength", type=float, default=1.0)
    src.add_argument("--lora-2", help="LoRA file for the second transformer of a two-expert model (Wan2.2 A14B)")
    src.add_argument("--lora-2-strength", type=float, default=1.0)
    run = p.add_argument_group("generation")
    run.add_argument("--preset", choices=[*PRESET_NAMES, "none"], default=None,
                     help="blade: ASA + LoRA, 8 steps, no CFG (default); baseline: dense, 50 steps, CFG; "
                     "none: dense, --sampler/--steps/--guidance as given (default blade sampler, 8 steps, no CFG)")
    run.add_argument("--prompt", action="append", help="text prompt; repeat for several videos")
    run.add_argument("--negative-prompt", help="negative prompt (default: the family's standard one)")
    run.add_argument("--width", type=int)
    run.add_argument("--height", type=int)
    run.add_argument("--frames", type=int)
    run.add_argument("--steps", type=int)
    run.add_argument("--guidance", type=float, help="CFG scale (1.0 turns CFG off)")
    run.add_argument("--guidance-2", type=float,
                     help="CFG of the second expert of a two-expert model (default: the preset's, else --guidance)")
    run.add_argument("--seed", type=int, default=0, help="noise seed, 0 .. 2**64 - 1 (as in the nodes and the API)")
    run.add_argument("--sampler", choices=SAMPLER_NAMES)
    run.add_argument("--shift", type=float, help="Wan flow shift (3.0 at 480p, 5.0 at 720p)")
    run.add_argument("--eta", type=float, help="tdm sampler re-noising weight (0.9)")
    run.add_argument("--offload", action="store_true", help="keep each part on the GPU only while it runs")
    run.add_argument("--vae-tiling", action="store_true")
    run.add_argument(
        "--vae-chunk", type=int, metavar="N",
        help="Wan latent frames per VAE decoder call (default: sized to the resolution, 1 with --offload; 1 uses "
        "the least memory)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--output", default="outputs/video.mp4", help=".mp4 file, or a folder for PNG frames")
    out.add_argument("--overwrite", action="store_true", help="replace an existing output")
    out.add_argument("--fps", type=int, help="frames per second (default: Wan 16, CogVideoX 8)")
    out.add_argument("--crf", type=int, default=18, help="H.264 quality, 0..51, lower is better")
    dev = p.add_argument_group("device")
    dev.add_argument(
        "--dtype", choices=list(DTYPE_NAMES), help="weights dtype (default: bf16 on GPU, fp32 on CPU)",
    )
    dev.add_argument("--device", help="auto, cuda, cuda:1, cpu ... (default auto: cuda when available)")
    dev.add_argument(
        "--compile", action="store_true",
        help="torch.compile each transformer block (faster steps; the first video also pays for compiling)",
    )
    dev.add_argument(
        "--fp8-linear", action="store_true",
        help="run the transformer blocks' attention projections and feed-forward layers as fp8 (e4m3) matrix "
        "products, per-channel weight and per-token activation scales (GPUs with fp8 tensor cores: compute "
        "capability 8.9+, e.g. RTX 40xx, H100); applied after ASA and the LoRA",
    )
    dev.add_argument(
        "--compile-vae", action="store_true",
        help="torch.compile the Wan VAE decoder (1.36 s instead of 1.78 s at 81x480x832 on an H100); the first "
        "decode at each size compiles for 15-60 s, so it pays off only where one process decodes many videos",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p

DEMO_FAMILY = WAN  # --demo builds a tiny model of this family


def load_bundle(args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> ModelBundle:
    """The model the arguments name: --demo, --model folder and/or single files."""
    if args.demo:
        from .models.bundle import ModelBundle
        from .models.tiny import tiny_components

        parts = tiny_components(DEMO_FAMILY.name, seed=0)
        scheduler = parts.pop("scheduler")
        return ModelBundle(family=DEMO_FAMILY, scheduler_config=dict(scheduler.config), variant="tiny-demo",
                           sources={"demo": "blade_ops.models.tiny"}, **parts)
    from .models import load_model_bundle

    return load_model_bundle(
        args.transformer or args.model, family=args.family, dtype=dtype, device=device,
        vae_path=args.vae or (args.model if args.transformer and args.model else None),
        text_encoder_path=args.text_encoder or (args.model if args.transformer and args.model else None),
        offload="model" if args.offload else "none",
        expert_paths={"transformer_2": args.transformer_2} if args.transformer_2 else None,
    )


def _demo_defaults(args: argparse.Namespace) -> None:
    from .models.tiny import tiny_video_size

    for key, value in tiny_video_size(DEMO_FAMILY.name).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the arguments without importing torch; errors are ValueError/FileNotFoundError/... ."""
    args = build_parser().parse_args(argv)
    if args.demo:
        if args.family not in (None, DEMO_FAMILY.name):
            raise ValueError(f"--demo builds a tiny Wan model; --family {args.family} does not apply to it.")
        args.family = DEMO_FAMILY.name
        args.prompt = args.prompt or ["a red ball bouncing on a green street"]
    elif not args.model and not args.transformer:
        raise ValueError(
            "No model given: pass --model FOLDER, --transformer FILE (with --vae/--text-encoder), or --demo."
        )
    check_request_args(args)
    return args


def check_request_args(args: argparse.Namespace) -> None:
    """Every request field the arguments give, checked the way GenerationRequest and the nodes check them, plus the
    files (they exist and are safetensors or diffusers folders) and the outputs, before any weights load."""
    if not args.prompt:
        raise ValueError("--prompt is required (repeat it for several videos).")
    check_prompts(args.prompt)
    for name in ("width", "height", "frames", "steps"):
        check_positive_int(name, getattr(args, name))
    if args.vae_chunk is not None and args.vae_chunk < 1:
        raise ValueError(f"--vae-chunk {args.vae_chunk}: give at least 1 latent frame per VAE decoder call.")
    check_seed(args.seed)
    if args.guidance is not None:
        check_guidance(args.guidance)
    if args.guidance_2 is not None:
        check_guidance(args.guidance_2)
    check_shift(args.shift)
    check_eta(args.eta)
    for flag, value in (("--lora-strength", args.lora_strength), ("--lora-2-strength", args.lora_2_strength)):
        if not math.isfinite(value):
            raise ValueError(f"{flag} {value} must be a finite number (1.0 as distilled).")
    if args.transformer_2 and not args.transformer:
        raise ValueError("--transformer-2 is the second expert's file: give the first with --transformer.")
    if args.family is not None:
        check_size(args, args.family)
    for name in ("model", "transformer", "transformer_2", "vae", "text_encoder", "lora", "lora_2"):
        value = getattr(args, name)
        if value:
            check = check_lora_path if name.startswith("lora") else check_weight_path
            check(value, "--" + name.replace("_", "-"))
    _check_outputs(args)


def check_size(args: argparse.Namespace, family: str) -> None:
    """The width, height and frames given on the command line against ``family``'s rules (unset ones take the
    family's defaults, which are valid)."""
    spec = get_family(family)
    given = {"width": args.width, "height": args.height, "frames": args.frames}
    placeholder = {"width": spec.pixel_multiple, "height": spec.pixel_multiple, "frames": 1}  # valid by the rules
    check_video_size(spec, **{k: v if v is not None else placeholder[k] for k, v in given.items()})


def run(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.family is None:  # read from the model's header or model_index.json, still before any weights load
        from .models import detect_family

        check_size(args, detect_family(args.transformer or args.model))
    from .models import resolve_dtype
    from .models.placement import auto_dtype, resolve_device
    from .pipeline import GenerationRequest, prepare_model, preset_request

    if args.demo:
        _demo_defaults(args)
    device = resolve_device(args.device)
    if args.fp8_linear:  # refused here, before any weights load, where the device has no fp8 tensor cores
        from .models.fp8_linear import check_fp8_device

        check_fp8_device(device)
    dtype = resolve_dtype(args.dtype) if args.dtype else auto_dtype(device)
    args.preset = args.preset or "blade"
    bundle = load_bundle(args, dtype, device)
    options = dict(
        negative_prompt=args.negative_prompt, width=args.width, height=args.height, frames=args.frames,
        steps=args.steps, guidance=args.guidance, guidance_2=args.guidance_2, seed=args.seed, sampler=args.sampler,
        shift=args.shift,
        eta=args.eta, fps=args.fps, offload=args.offload, vae_tiling=args.vae_tiling,
        vae_chunk_frames=args.vae_chunk,
    )
    loras = dict(lora=args.lora, lora_strength=args.lora_strength)
    if args.lora_2:
        if len(bundle.family.expert_names) < 2:
            raise ValueError(f"--lora-2 is for a model's second transformer; {bundle.family.label} runs one.")
        loras["expert_loras"] = {bundle.family.expert_names[1]: (args.lora_2, args.lora_2_strength)}
    if args.preset == "none":  # dense run of the chosen sampler (blade schedule unless told otherwise)
        options = {k: v for k, v in options.items() if v is not None}
        options.setdefault("sampler", "blade")
        request = GenerationRequest(prompt=args.prompt, **options)
        if args.lora or args.lora_2:
            prepare_model(bundle, "baseline", **loras)
    else:
        prepare_model(bundle, args.preset, **loras)
        request = preset_request(args.preset, bundle.family, args.prompt, **options)
    if args.fp8_linear:  # after ASA and the LoRA (it quantises the weights as they leave them), before compiling
        from .models.fp8_linear import install_fp8_linears

        for expert in bundle.experts:
            install_fp8_linears(expert, device=device)
    if args.compile:  # after ASA, the LoRA and fp8 linears, so the blocks compile once
        from .pipeline.compile import compile_transformer

        for expert in bundle.experts:
            compile_transformer(expert)
    if args.compile_vae:
        from .pipeline.compile import compile_vae_decoder

        if not compile_vae_decoder(bundle.vae):
            logger.warning("--compile-vae: only the Wan VAE decoder compiles; this %s VAE runs as it is.",
                           bundle.family.name)
    result = _generate_with_progress(bundle, request, device)
    return _save(result, request, args, bundle)


def _generate_with_progress(bundle: ModelBundle, request: GenerationRequest, device: torch.device):
    from tqdm import tqdm

    from .pipeline import generate

    bars: list[tqdm] = []

    def on_step(info) -> None:
        if not bars:
            bars.append(tqdm(total=info.total, desc="denoising", unit="step", file=sys.stderr))
        bars[0].update(1)

    try:
        return generate(bundle, request, callback=on_step, device=device)
    finally:
        for bar in bars:
            bar.close()


def _targets(output: Path, count: int) -> list[Path]:
    return [output] if count == 1 else [output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(count)]


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before any model loads when an output option is invalid, the output cannot be written, or it would
    overwrite without --overwrite."""
    mp4 = Path(args.output).suffix.lower() == ".mp4"
    if mp4 and not 0 <= args.crf <= 51:
        raise ValueError(f"crf={args.crf} must be in 0..51 (lower is better quality; 18 is visually lossless).")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"fps={args.fps} must be a positive number of frames per second (Wan 16, CogVideoX 8).")
    for target in _targets(Path(args.output), len(args.prompt)):
        check_output_path(target, folder=not mp4, overwrite=args.overwrite)


def _save(result, request: GenerationRequest, args: argparse.Namespace, bundle: ModelBundle) -> Path:
    from .video_io import write_video

    output = Path(args.output)
    info = {
        "prompt": request.prompts, "negative_prompt": request.negative_prompt, "seed": request.seed,
        "sampler": request.sampler, "timesteps": result.timesteps, "guidance": request.guidance,
        "family": bundle.family.name, "preset": args.preset, "lora": args.lora,
        **({"lora_2": args.lora_2} if args.lora_2 else {}),
    }
    written = []
    for i, (frames, target) in enumerate(zip(result.frames, _targets(output, len(result.frames)), strict=True)):
        written.append(write_video(frames, target, fps=result.fps, crf=args.crf, overwrite=args.overwrite,
                                   metadata={**info, "prompt": request.prompts[i]}))
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    print(f"Wrote {', '.join(map(str, written))} ({timing})")  # noqa: T201 (command-line output)
    return written[0]


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 (command-line output)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
