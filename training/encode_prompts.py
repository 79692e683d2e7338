"""Pre-encode a prompt list with a model's text encoder: ``python -m training.encode_prompts``.

    python -m training.encode_prompts --model /models/Wan2.1-T2V-1.3B-Diffusers \\
        --prompts prompts.txt --output outputs/wan_prompts [--batch-size 16] [--dtype bf16]

Writes the folder described in training/prompts.py: one safetensors shard per ``--shard-size`` prompts plus the
family's negative prompt and the empty prompt. Re-running the same command resumes after the last complete
shard; a different prompt list or model in an existing folder is an error (use a new folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from blade_ops.models.bundle import ModelBundle
from blade_ops.text import encode_text

from .loading import load_text_bundle, torch_dtype
from .prompts import INDEX, NEGATIVE, atomic_write_bytes_file, prompts_digest, read_prompt_file, shard_name

logger = logging.getLogger("training.encode_prompts")


def encode_to_folder(
    bundle: ModelBundle,
    prompts: list[str],
    output: str | Path,
    *,
    batch_size: int = 8,
    shard_size: int = 64,
    dtype: torch.dtype = torch.bfloat16,
    model_name: str = "",
    negative_prompt: str | None = None,
) -> Path:
    """Encode ``prompts`` into ``output`` (resumable); returns the folder."""
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size={batch_size} and shard_size={shard_size} must be >= 1.")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    digest = prompts_digest(prompts)
    index_path = output / INDEX
    num_shards = -(-len(prompts) // shard_size)
    index = {
        "family": bundle.family.name, "model": model_name, "digest": digest, "num_prompts": len(prompts),
        "shard_size": shard_size, "num_shards": num_shards, "dtype": str(dtype).removeprefix("torch."),
        "prompts": prompts,
    }
    if index_path.is_file():
        old = json.loads(index_path.read_text())
        for key in ("family", "digest", "shard_size", "dtype"):
            if old.get(key) != index[key]:
                raise ValueError(
                    f"{str(output)!r} already holds embeddings with {key}={old.get(key)!r} (now {index[key]!r}); "
                    "use a new output folder."
                )
    atomic_write_bytes_file(index_path, lambda p: p.write_text(json.dumps(index, indent=1)))

    negative = bundle.family.default_negative_prompt if negative_prompt is None else negative_prompt
    if not (output / NEGATIVE).is_file():
        special = encode_text(bundle, [negative, ""]).to(dtype)
        tensors = {"negative": special[:1].contiguous(), "empty": special[1:].contiguous()}
        atomic_write_bytes_file(output / NEGATIVE, lambda p: save_file(tensors, str(p), {"negative": negative}))

    for s in range(num_shards):
        path = output / shard_name(s)
        if path.is_file():
            logger.info("Shard %d/%d exists, skipping", s + 1, num_shards)
            continue
        chunk = prompts[s * shard_size : (s + 1) * shard_size]
        parts = [encode_text(bundle, chunk[b : b + batch_size]).to(dtype) for b in range(0, len(chunk), batch_size)]
        embeds = torch.cat(parts).cpu().contiguous()
        atomic_write_bytes_file(path, lambda p, e=embeds: save_file({"embeds": e}, str(p)))
        logger.info("Shard %d/%d: %d prompts -> %s", s + 1, num_shards, len(chunk), path.name)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="diffusers folder of the model (its text encoder is used)")
    parser.add_argument("--prompts", required=True, help="text file (one prompt a line) or JSON list")
    parser.add_argument("--output", required=True, help="embedding folder to create or resume")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--negative-prompt", default=None, help="default: the family's (Wan's standard one, or '')")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    prompts = read_prompt_file(args.prompts)
    bundle = load_text_bundle(args.model, device=args.device)
    encode_to_folder(
        bundle, prompts, args.output, batch_size=args.batch_size, shard_size=args.shard_size,
        dtype=torch_dtype(args.dtype), model_name=str(args.model), negative_prompt=args.negative_prompt,
    )
    logger.info("Encoded %d prompts into %s", len(prompts), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
