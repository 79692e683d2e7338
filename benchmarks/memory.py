"""Peak GPU memory of one BLADE video with offloading: can Wan2.1-1.3B make 81x480x832 within 12 GB?

Random weights of the real configs (memory does not depend on the weights), every part starting on the CPU, the
pipeline's own ``generate`` with ``offload=True``: the text encoder streams block by block, the transformer and
the VAE visit the GPU only for their stage. Reports the peak of each stage and of the whole run.

    python benchmarks/memory.py --variant wan2.1-t2v-1.3b
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from end_to_end import PROMPT, build_random_bundle  # noqa: E402

from blade_ops.pipeline import DEFAULT_SIZES, generate, prepare_model, preset_request  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", default="wan2.1-t2v-1.3b")
    parser.add_argument("--budget-gib", type=float, default=12.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("memory.py measures GPU memory; no CUDA device is visible.")
    bundle = build_random_bundle(args.variant, torch.bfloat16, torch.device("cuda"))
    for part in (bundle.transformer, bundle.vae, bundle.text_encoder):
        part.to("cpu")
    torch.cuda.empty_cache()
    prepare_model(bundle, "blade")
    size = DEFAULT_SIZES[bundle.family.name]
    peaks = {}

    def on_step(info) -> None:
        peaks["denoising"] = max(peaks.get("denoising", 0.0), torch.cuda.max_memory_allocated() / 2**30)

    torch.cuda.reset_peak_memory_stats()
    request = preset_request("blade", bundle.family, PROMPT, offload=True, **size)
    result = generate(bundle, request, device="cuda", callback=on_step)
    peak = torch.cuda.max_memory_allocated() / 2**30
    report = {"variant": args.variant, "size": size, "peak_gib": peak, "peak_by_step_gib": peaks.get("denoising"),
              "timings_s": result.timings, "frames": list(result.frames.shape), "gpu": torch.cuda.get_device_name(),
              "torch": torch.__version__, "within_budget": peak <= args.budget_gib}
    print(json.dumps(report, indent=1))  # noqa: T201
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
