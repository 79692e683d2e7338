"""Command line: make a video from text with a Wan2.1 or CogVideoX model.

    python -m blade_ops.generate --model /models/Wan2.1-T2V-1.3B-Diffusers --lora blade_wan.safetensors \\
        --prompt "a red fox running through snow" --output outputs/fox.mp4
    python -m blade_ops.generate --demo          # tiny random model built on the fly, no weights needed
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from .families import get_family
from .models.bundle import ModelBundle
from .models.placement import resolve_device
from .pipeline import GenerationRequest, prepare_model, preset_request
from .pipeline.presets import PRESETS
from .sampling import available_samplers
from .video_io import write_video

logger = logging.getLogger("blade_ops.generate")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m blade_ops.generate", description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("model")
    src.add_argument("--model", help="diffusers model folder (model_index.json + transformer/, vae/, ...)")
    src.add_argument("--transformer", help="transformer single file (.safetensors), instead of --model's")
    src.add_argument("--vae", help="VAE file or folder (needed with --transformer unless --model gives it)")
    src.add_argument(
        "--text-encoder",
        help="text encoder: diffusers folder or text_encoders .safetensors file (with --transformer, unless --model)",
    )
    src.add_argument("--family", choices=["wan", "cogvideox"], help="model family (detected when omitted)")
    src.add_argument("--demo", action="store_true", help="use a tiny random Wan model (no weights; for smoke tests)")
    src.add_argument("--lora", help="BLADE LoRA file (.safetensors)")
    src.add_argument("--lora-strength", type=float, default=1.0)
    run = p.add_argument_group("generation")
    run.add_argument("--preset", choices=[*sorted(PRESETS), "none"], default=None,
                     help="blade: ASA + LoRA, 8 steps, no CFG (default); baseline: dense, 50 steps, CFG; "
                     "none: dense, --sampler/--steps/--guidance as given (default blade sampler, 8 steps, no CFG)")
    run.add_argument("--prompt", action="append", help="text prompt; repeat for several videos")
    run.add_argument("--negative-prompt", help="negative prompt (default: the family's standard one)")
    run.add_argument("--width", type=int)
    run.add_argument("--height", type=int)
    run.add_argument("--frames", type=int)
    run.add_argument("--steps", type=int)
    run.add_argument("--guidance", type=float, help="CFG scale (1.0 turns CFG off)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--sampler", choices=available_samplers())
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
        "--dtype", choices=sorted(DTYPES), help="weights dtype (default: bfloat16 on GPU, float32 on CPU)",
    )
    dev.add_argument("--device", help="cuda, cuda:1, cpu ... (default: cuda when available)")
    dev.add_argument(
        "--compile", action="store_true",
        help="torch.compile each transformer block (faster steps; the first video also pays for compiling)",
    )
    dev.add_argument(
        "--compile-vae", action="store_true",
        help="torch.compile the Wan VAE decoder (1.36 s instead of 1.78 s at 81x480x832 on an H100); the first "
        "decode at each size compiles for 15-60 s, so it pays off only where one process decodes many videos",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def load_bundle(args: argparse.Namespace, dtype: torch.dtype, device: torch.device) -> ModelBundle:
    """The model the arguments name: --demo, --model folder and/or single files."""
    if args.demo:
        from .models.tiny import tiny_components

        parts = tiny_components("wan", seed=0)
        scheduler = parts.pop("scheduler")
        return ModelBundle(family=get_family("wan"), scheduler_config=dict(scheduler.config), variant="tiny-demo",
                           sources={"demo": "blade_ops.models.tiny"}, **parts)
    if not args.model and not args.transformer:
        raise ValueError(
            "No model given: pass --model FOLDER, --transformer FILE (with --vae/--text-encoder), or --demo."
        )
    from .models import load_model_bundle

    return load_model_bundle(
        args.transformer or args.model, family=args.family, dtype=dtype, device=device,
        vae_path=args.vae or (args.model if args.transformer and args.model else None),
        text_encoder_path=args.text_encoder or (args.model if args.transformer and args.model else None),
        offload="model" if args.offload else "none",
    )


def _demo_defaults(args: argparse.Namespace) -> None:
    from .models.tiny import tiny_video_size

    for key, value in tiny_video_size("wan").items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.prompt:
        args.prompt = ["a red ball bouncing on a green street"]


def run(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.demo:
        if args.family not in (None, "wan"):
            raise ValueError(f"--demo builds a tiny Wan model; --family {args.family} does not apply to it.")
        _demo_defaults(args)
    if not args.prompt:
        raise ValueError("--prompt is required (repeat it for several videos).")
    if args.vae_chunk is not None and args.vae_chunk < 1:
        raise ValueError(f"--vae-chunk {args.vae_chunk}: give at least 1 latent frame per VAE decoder call.")
    _check_outputs(args)
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    args.preset = args.preset or "blade"
    bundle = load_bundle(args, dtype, device)
    options = dict(
        negative_prompt=args.negative_prompt, width=args.width, height=args.height, frames=args.frames,
        steps=args.steps, guidance=args.guidance, seed=args.seed, sampler=args.sampler, shift=args.shift,
        eta=args.eta, fps=args.fps, offload=args.offload, vae_tiling=args.vae_tiling,
        vae_chunk_frames=args.vae_chunk,
    )
    if args.preset == "none":  # dense run of the chosen sampler (blade schedule unless told otherwise)
        options = {k: v for k, v in options.items() if v is not None}
        options.setdefault("sampler", "blade")
        request = GenerationRequest(prompt=args.prompt, **options)
        if args.lora:
            prepare_model(bundle, "baseline", lora=args.lora, lora_strength=args.lora_strength)
    else:
        prepare_model(bundle, args.preset, lora=args.lora, lora_strength=args.lora_strength)
        request = preset_request(args.preset, bundle.family, args.prompt, **options)
    if args.compile:  # after ASA and the LoRA, so the blocks compile once
        from .pipeline.compile import compile_transformer

        compile_transformer(bundle.transformer)
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
    """Fail before any model loads when an output option is invalid or would overwrite without --overwrite."""
    if Path(args.output).suffix.lower() == ".mp4" and not 0 <= args.crf <= 51:
        raise ValueError(f"crf={args.crf} must be in 0..51 (lower is better quality; 18 is visually lossless).")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"fps={args.fps} must be a positive number of frames per second (Wan 16, CogVideoX 8).")
    if args.overwrite:
        return
    for target in _targets(Path(args.output), len(args.prompt)):
        if target.exists():
            raise FileExistsError(f"{target} already exists; pass --overwrite to replace it.")


def _save(result, request: GenerationRequest, args: argparse.Namespace, bundle: ModelBundle) -> Path:
    output = Path(args.output)
    info = {
        "prompt": request.prompts, "negative_prompt": request.negative_prompt, "seed": request.seed,
        "sampler": request.sampler, "timesteps": result.timesteps, "guidance": request.guidance,
        "family": bundle.family.name, "preset": args.preset, "lora": args.lora,
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
    except (ValueError, RuntimeError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 (command-line output)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
