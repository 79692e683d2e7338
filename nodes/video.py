"""Video nodes: decode latents to ComfyUI IMAGE frames, and save frames as an mp4 shown in the UI."""

from __future__ import annotations

import logging

import torch

from . import comfy_bridge as bridge
from .inputs import finite_float
from .types import BLADE_VAE, CATEGORY

log = logging.getLogger(__name__)

SAVE_VIDEO = "BLADE Save Video"
FPS = {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "Frames per second: Wan 16, CogVideoX 8."}


def model_latents(latent: dict, vae) -> torch.Tensor:
    """The latents of a LATENT in the model's scale and layout, for ``vae`` (a bundle holding the VAE).

    BLADE Sampler's exact latents when its ``samples`` are unchanged; otherwise ``samples`` [B, C, T, H, W] in the
    VAE's scale (any ComfyUI video LATENT, e.g. from KSampler with a Wan model) converted with the VAE's config.
    """
    from ..blade_ops.pipeline import from_vae_scale

    vae.require("vae")
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise ValueError("The latent input is not a ComfyUI LATENT (a dict with a 'samples' tensor).")
    blade = latent.get("blade")
    if isinstance(blade, dict) and "latents" in blade:
        if not _vae_fits(blade["family"], vae):
            raise ValueError(
                f"The latents come from a {blade['family']} model but the VAE is {vae.family.name}'s; load the "
                f"{blade['family']} VAE in BLADE VAE Loader."
            )
        kept = blade.get("samples")
        if kept is samples or (isinstance(kept, torch.Tensor) and kept.shape == samples.shape
                               and torch.equal(kept, samples)):
            return blade["latents"]
        log.info("BLADE: the LATENT was changed after BLADE Sampler; decoding its samples.")
    channels = _vae_latent_channels(vae)
    if samples.ndim != 5 or samples.shape[1] != channels:
        raise ValueError(
            f"The latent has shape {tuple(samples.shape)}; the {vae.family.name} VAE decodes video latents "
            f"[batch, {channels}, frames, height, width]. Decode other latents with ComfyUI's own VAE Decode."
        )
    return from_vae_scale(samples.float(), vae.vae.config, vae.family.name)


def _vae_fits(family_name: str, vae) -> bool:
    """Whether the latents of ``family_name``'s model decode with this VAE: its own family's, or one the family
    accepts (Wan2.2 A14B takes the Wan2.1 VAE, which loads as Wan2.1's when nothing says otherwise)."""
    from ..blade_ops.families import get_family

    if family_name == vae.family.name:
        return True
    family = get_family(family_name)
    if family.arch != vae.family.arch:
        return False
    try:
        return family.accepts("vae", family.structure_from_config("vae", dict(vae.vae.config)))
    except KeyError:
        return False


def _vae_latent_channels(vae) -> int:
    cfg = vae.vae.config
    return int(cfg.get("z_dim") or cfg.get("latent_channels") or vae.family.latent_channels)


def _set_decoder_compiled(vae, compiled: bool) -> None:
    """Compile the Wan decoder for this run, or undo an earlier node run's compile (the VAE object is shared)."""
    from ..blade_ops.pipeline.compile import compile_vae_decoder, uncompile_vae_decoder

    if compiled:
        if not compile_vae_decoder(vae):
            log.info("BLADE VAE Decode: compile applies to the Wan VAE only; %s decodes as it is", type(vae).__name__)
    else:
        uncompile_vae_decoder(vae)


class BladeVAEDecode:
    """Decode BLADE Sampler latents, or a native ComfyUI video LATENT, to frames."""

    DESCRIPTION = (
        "Decodes the latents of BLADE Sampler, or any video LATENT of the VAE's family in ComfyUI's usual scale (e.g. "
        "KSampler with a native Wan model), into IMAGE frames [frames, height, width, 3] in 0..1, which Preview "
        "Image, Create Video / Save Video, Save Animated WEBP or Video Combine take. Tiled decoding needs much less "
        "GPU memory at high resolution."
    )
    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("All frames of all videos in the batch, one after another.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "vae": (BLADE_VAE, {"tooltip": "From BLADE VAE Loader, of the same family as the model."}),
                "latent": ("LATENT", {"tooltip": "From BLADE Sampler, or any video LATENT of this model family "
                                      "(e.g. KSampler with a native Wan model)."}),
                "tiled": ("BOOLEAN", {"default": False,
                                      "tooltip": "Decode in overlapping tiles: slower, far less memory."}),
            },
            "optional": {
                "compile": ("BOOLEAN", {"default": False,
                                        "tooltip": "Wan on a CUDA GPU: torch.compile the decoder. The first decode "
                                        "at each size takes 15-60 s longer, later ones about 25% less time "
                                        "(1.36 s instead of 1.78 s at 81x480x832 on an H100). Other VAEs and "
                                        "devices decode as they are."}),
            },
        }

    def decode(self, vae, latent: dict, tiled: bool = False, compile: bool | None = None) -> tuple[torch.Tensor]:
        from ..blade_ops.models import on_device
        from ..blade_ops.pipeline import decode

        latents = model_latents(latent, vae)
        _set_decoder_compiled(vae.vae, bool(compile) and not tiled and bridge.torch_device().type == "cuda")
        bridge.check_interrupted()
        bridge.free_comfy_memory()
        advice = "Turn on 'tiled' in BLADE VAE Decode, or load the VAE with dtype bf16/fp16."
        device = bridge.torch_device()
        with bridge.oom_advice("decoding the video", advice), on_device(vae.vae, device, offload="model"):
            # Cancel stops between decoder calls (chunks of frames, tiles), not only before the decode.
            frames = decode(vae, latents, tiled=bool(tiled), check_cancel=bridge.check_interrupted)  # [B, F, H, W, C]
        return (frames.reshape(-1, *frames.shape[2:]).float().cpu(),)


class BladeSaveVideo:
    """Save frames as an H.264 mp4 in ComfyUI's output folder and show it in the UI."""

    DESCRIPTION = (
        "Writes the frames as an H.264 mp4 into ComfyUI's output folder, with the workflow and prompt embedded in "
        "the file's metadata as core's Save Video does (drag the mp4 onto ComfyUI to load its workflow), and shows "
        "the video on the node."
    )
    CATEGORY = CATEGORY
    FUNCTION = "save"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames from BLADE VAE Decode (or any IMAGE batch)."}),
                "filename_prefix": ("STRING", {"default": "BLADE/video",
                                               "tooltip": "File name prefix; may contain a subfolder and ComfyUI's "
                                               "%date:yyyy-MM-dd% tokens."}),
                "fps": ("FLOAT", dict(FPS)),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "step": 1,
                                "tooltip": "H.264 quality: lower is better and bigger (18-23 is typical)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(
        self,
        images: torch.Tensor,
        filename_prefix: str = "BLADE/video",
        fps: float = 16.0,
        crf: int = 19,
        prompt: dict | None = None,
        extra_pnginfo: dict | None = None,
    ) -> dict:
        from ..blade_ops.video_io import write_mp4

        fps = finite_float(fps, "fps", SAVE_VIDEO, FPS)
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError("images must be an IMAGE batch [frames, height, width, channels].")
        height, width = int(images.shape[1]), int(images.shape[2])
        path, filename, subfolder = bridge.save_path(filename_prefix, width, height, "mp4")
        tags = None
        if not bridge.metadata_disabled():  # as core's SaveVideo: one JSON tag per key, so the UI can load it back
            tags = dict(extra_pnginfo or {})  # "workflow" (the UI graph) and any other extra info
            if prompt is not None:
                tags["prompt"] = prompt
        write_mp4(images[..., :3], path, fps=fps, crf=int(crf), tags=tags or None)
        log.info("BLADE: saved %d frames to %s", images.shape[0], path)
        result = {"filename": filename, "subfolder": subfolder, "type": "output"}
        return {"ui": {"images": [result], "animated": (True,)}}


NODES = {
    "BladeVAEDecode": (BladeVAEDecode, "BLADE VAE Decode"),
    "BladeSaveVideo": (BladeSaveVideo, SAVE_VIDEO),
}
