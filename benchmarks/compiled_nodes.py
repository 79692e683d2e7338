"""Compiled sampling through the nodes, the same graph run twice as ComfyUI runs it twice: per run, seconds and the
dynamo graphs it compiled, next to the eager per-run time.

Two paths, each with ASA and a BLADE-shaped LoRA, 8 BLADE steps, no CFG, random weights of the real Wan2.1-T2V-1.3B
config in bf16 (timings do not depend on the weights), 81x480x832, one prompt's worth of random text embeddings
(text encoding and VAE decode are not what this measures):

- pack: the pack's node classes called as ComfyUI calls them (BLADE ASA -> BLADE LoRA Loader -> BLADE Sampler, a
  random rank-64 LoRA on the 240 attention projections, unmerged as the node applies it). The sampler moves the
  transformer to the GPU and back for each run, puts the patches on (kept between runs while they do not change:
  ``nodes/patching.py``) and, with ``compile``, compiles the transformer blocks (``blade_ops.pipeline.compile``).
- native: core's WanModel (``comfy.sd.load_diffusion_model_state_dict``, the same weights in core's layout) through
  BLADE ASA (ComfyUI model) -> BLADE LoRA (ComfyUI model) -> core's TorchCompileModel (inductor), sampled with
  ``comfy.sample.sample_custom`` (SamplerCustomAdvanced) with BLADE Schedule's sigmas and BLADE UniPC.

Per path: an eager warm-up run of ``--warmup-steps`` (loads, compiles ASA's own kernels), an eager run (the eager
per-run time), then the compiled graph twice: the first run compiles, the second must compile nothing (``new
graphs`` 0; the script warns otherwise, and TORCH_LOGS-style recompile reasons are printed to stderr).

On one H100 (about 4 minutes in all, compiling included):

    COMFYUI_PATH=$PWD/.comfy python benchmarks/compiled_nodes.py --json runs/compiled_nodes.json \\
        --markdown runs/compiled_nodes.md

Check on the CPU first (the same code, 2 blocks of the real width, 5x64x64, 3 steps):

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/compiled_nodes.py --smoke --json /tmp/cn.json --markdown /tmp/cn.md
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parent))

import native_comfyui as native  # noqa: E402  (ComfyUI import, the pack as ComfyUI imports it, the LoRA file)

log = logging.getLogger("compiled_nodes")
DEVICE = torch.device("cuda")
SEED = 0


def _graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def measured(path: str, label: str, steps: int, fn, extra=None) -> dict:
    """Run ``fn()`` once; its seconds and the dynamo graphs it compiled, as a table row."""
    _sync()
    graphs = _graphs()
    start = time.perf_counter()
    fn()
    _sync()
    row = {"path": path, "run": label, "steps": steps, "seconds": time.perf_counter() - start,
           "new_graphs": _graphs() - graphs}
    if extra is not None:
        row.update(extra())
    log.info("%s", row)
    return row


def diffusers_transformer(variant: str, layers: int | None) -> torch.nn.Module:
    """The variant's diffusers Wan transformer (shipped config; ``layers`` blocks if given), random, bf16."""
    from blade_pack.blade_ops.models.variants import random_model

    torch.manual_seed(SEED)
    with DEVICE:
        model = random_model(variant, "transformer", **({"num_layers": layers} if layers else {}))
    return model.to(torch.bfloat16).eval()


def pack_path(mapping, transformer, variant: str, lora: Path, args) -> list[dict]:
    """The pack's nodes: BLADE ASA -> BLADE LoRA Loader -> BLADE Sampler (eager, then ``compile`` on, twice)."""
    from blade_pack.blade_ops.families import get_family
    from blade_pack.blade_ops.models.bundle import ModelBundle
    from blade_pack.blade_ops.models.variants import get_variant
    from blade_pack.blade_ops.text import PromptEmbeds
    from blade_pack.nodes.patching import installed_patches, unpatch
    from blade_pack.nodes.types import BladeModel

    family = get_family(get_variant(variant).family)
    transformer.to("cpu")  # where BLADE Model Loader leaves it; the sampler moves it for each run
    bundle = ModelBundle(family=family, transformer=transformer, variant=variant, dtype=torch.bfloat16)
    model = mapping["BladeASA"]().patch(BladeModel(bundle), "family defaults", args.backend)[0]
    model = mapping["BladeLoraLoader"]().patch(model, str(lora), 1.0)[0]
    g = torch.Generator().manual_seed(SEED)
    text = family.text_length(transformer)
    embeds = PromptEmbeds(torch.randn(1, text, transformer.config.text_dim, generator=g).to(torch.bfloat16))
    sampler = mapping["BladeSampler"]()

    def run(steps: int, compile: bool):
        return lambda: sampler.sample(model, embeds, SEED, steps, 1.0, "blade", args.width, args.height, args.frames,
                                      False, None, compile=compile)

    def patches():
        before = installed_patches(transformer)

        def report():
            now = installed_patches(transformer)
            row = {"patches_put_on": now is not before}
            if now is not None and now.prepared.asa_handle is not None:
                row["asa_density"] = now.prepared.asa_handle.stats.mean_density
            return row
        return report

    rows = []
    for label, steps, compile in (("eager warm-up", args.warmup_steps, False), ("eager", args.steps, False),
                                  ("compiled 1", args.steps, True), ("compiled 2", args.steps, True)):
        rows.append(measured("pack", label, steps, run(steps, compile), patches()))
    unpatch(transformer)
    return rows


def torch_compile_model(model):
    """Core's TorchCompileModel node (backend inductor) on ``model``. Its module imports comfy_api.latest, which
    needs PyAV; without it, the node's own two lines (clone, ``set_torch_compile_wrapper``) are run instead."""
    try:
        from comfy_extras.nodes_torch_compile import TorchCompileModel
    except ImportError as err:
        from comfy_api.torch_helpers import set_torch_compile_wrapper

        log.info("TorchCompileModel not importable (%s); calling set_torch_compile_wrapper as the node does", err)
        compiled = model.clone()
        set_torch_compile_wrapper(model=compiled, backend="inductor")
        return compiled
    out = TorchCompileModel.execute(model, "inductor")
    return out.result[0] if hasattr(out, "result") else out[0]


def native_path(comfy, mapping, sd: dict, lora: Path, args) -> list[dict]:
    """Core's WanModel: BLADE ASA (ComfyUI model) -> BLADE LoRA (ComfyUI model) [-> TorchCompileModel], core's
    sample_custom with BLADE Schedule + BLADE UniPC."""
    base = comfy.sd.load_diffusion_model_state_dict(sd)
    model = mapping["BladeNativeASA"]().patch(base, "family defaults", args.backend)[0]
    model = mapping["BladeNativeLoRA"]().patch(model, str(lora), 1.0)[0]
    compiled = torch_compile_model(model)
    latent = torch.zeros(1, 16, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    noise = comfy.sample.prepare_noise(latent, SEED)
    g = torch.Generator().manual_seed(SEED)
    positive = [[torch.randn(1, 512, 4096, generator=g), {}]]
    negative = [[torch.zeros(1, 512, 4096), {}]]
    sampler = mapping["BladeUniPCSampler"]().sampler()[0]

    def run(m, steps: int):
        sigmas = mapping["BladeSchedule"]().sigmas(steps, 3.0)[0]
        return lambda: comfy.sample.sample_custom(m, noise, 1.0, sampler, sigmas, positive, negative, latent,
                                                  disable_pbar=True, seed=SEED)

    def density(m):
        def report():
            state = m.model_options["transformer_options"]["optimized_attention_override"].blade_asa_state
            return {"asa_density": state.last_report.mean_density} if state.last_report else {}
        return report

    rows = []
    for label, m, steps in (("eager warm-up", model, args.warmup_steps), ("eager", model, args.steps),
                            ("compiled 1", compiled, args.steps), ("compiled 2", compiled, args.steps)):
        rows.append(measured("native", label, steps, run(m, steps), density(m)))
    comfy.model_management.unload_all_models()
    return rows


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for path in dict.fromkeys(r["path"] for r in rows):
        by = {r["run"]: r for r in rows if r["path"] == path}
        eager, first, second = by["eager"]["seconds"], by["compiled 1"]["seconds"], by["compiled 2"]["seconds"]
        out.append({"path": path, "eager_s": eager, "compiled_first_s": first, "compiled_second_s": second,
                    "second_run_new_graphs": by["compiled 2"]["new_graphs"], "speedup_second_vs_eager": eager / second,
                    "compile_overhead_s": first - second})
        if by["compiled 2"]["new_graphs"]:
            log.warning("%s: the second compiled run compiled %d new graphs (see the recompile reasons above)", path,
                        by["compiled 2"]["new_graphs"])
    return out


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        f"{meta['variant']} ({meta['layers']} blocks), {'x'.join(map(str, meta['size']))}, bf16, {meta['device']}, "
        f"torch {meta['torch']}, ComfyUI {meta['comfyui_commit'][:7]}; random weights; ASA + BLADE-shaped LoRA, "
        "BLADE schedule, no CFG. Each row is one run of the graph; new graphs: dynamo graphs compiled during it.",
        "",
        "| path | run | steps | seconds | new graphs | patches put on | ASA density |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        put_on = {True: "yes", False: "no"}.get(r.get("patches_put_on"), "-")
        density = f"{r['asa_density']:.3f}" if "asa_density" in r else "-"
        lines.append(f"| {r['path']} | {r['run']} | {r['steps']} | {r['seconds']:.2f} | {r['new_graphs']} | {put_on} "
                     f"| {density} |")
    lines += ["", "| path | eager per run (s) | compiled, 1st run (s) | compiled, 2nd run (s) | new graphs in 2nd | "
              "2nd vs eager |", "|---|---|---|---|---|---|"]
    for s in result["summary"]:
        lines.append(f"| {s['path']} | {s['eager_s']:.2f} | {s['compiled_first_s']:.2f} | "
                     f"{s['compiled_second_s']:.2f} | {s['second_run_new_graphs']} | "
                     f"{s['speedup_second_vs_eager']:.2f}x |")
    lines += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="wan2.1-t2v-1.3b")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=8, help="BLADE steps of the timed runs")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--layers", type=int, default=None, help="transformer blocks (default: the config's)")
    parser.add_argument("--paths", default="pack,native", help="comma-separated: pack, native")
    parser.add_argument("--backend", default="auto", help="ASA kernel backend")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/blade_compiled_nodes"))
    parser.add_argument("--smoke", action="store_true",
                        help="check the script on the CPU: 2 blocks, 5x64x64, 3 steps (1 warm-up), backend torch")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch._logging.set_logs(recompiles=True)  # why, if a run compiles again
    global DEVICE
    if args.smoke:
        DEVICE = torch.device("cpu")
        args.layers, args.width, args.height, args.frames = args.layers or 2, 64, 64, 5
        args.steps, args.warmup_steps, args.backend = 3, 1, "torch"
    native.DEVICE = DEVICE
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - {"pack", "native"}:
        raise SystemExit(f"--paths {args.paths!r}: use pack, native or both")
    comfy = native.import_comfy(cpu=args.smoke)
    pack = native.load_pack()
    mapping = pack.NODE_CLASS_MAPPINGS
    from blade_pack.blade_ops.models.keymaps import wan_transformer_to_original

    args.workdir.mkdir(parents=True, exist_ok=True)
    transformer = diffusers_transformer(args.variant, args.layers)
    layers = len(transformer.blocks)
    sd = {k: v.clone() for k, v in wan_transformer_to_original(transformer.state_dict()).items()}  # core's layout
    lora = native.blade_lora_file(sd, args.workdir / "blade_lora.safetensors")
    rows: list[dict] = []
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        if "pack" in paths:
            rows += pack_path(mapping, transformer, args.variant, lora, args)
        del transformer
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()
        if "native" in paths:
            rows += native_path(comfy, mapping, sd, lora, args)
    commit = native.comfyui_commit()
    meta = {"device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", "torch": torch.__version__,
            "comfyui_commit": commit, "variant": args.variant, "layers": layers,
            "size": [args.frames, args.height, args.width],
            "command": "python benchmarks/compiled_nodes.py " + shlex.join(argv or sys.argv[1:])}
    result = {"meta": meta, "rows": rows, "summary": summary(rows)}
    native.write_report(result, args.json, args.markdown, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
