"""Regional compilation of a Wan or CogVideoX transformer: ``torch.compile`` on each transformer block.

The blocks of a model are identical modules, so dynamo traces one block once and every other block reuses that
compiled code (the parameters are graph inputs): compile time is that of one block, not of the whole model, and
the code outside the blocks (patch embedding, timestep and rotary embeddings, the forward pre-hook that tells ASA
the video grid) stays eager. Inside a block, inductor fuses what is not attention: norms, modulation, rotary
embedding, projections with their bias and activation, the feed-forward network.

ASA's attention call (``ASAHandle.attend``, reached through the processors' ``ASAProcessorBase.attend``, which
reads the layer index) is excluded from tracing (``torch.compiler.disable``): the compiled block breaks its graph
there and ASA runs eagerly with its own compiled kernels (FlexAttention, Triton estimate). Traced, it would
specialise the block per layer index and per sampling step and hit dynamo's recompile limit. Attention
processors are attributes read at call time, so swapping them after compiling (installing or removing ASA) makes
the blocks recompile on their next call; loading or removing a peft LoRA (new modules) does too. Order that
compiles once: ASA, then the LoRA, then :func:`compile_transformer`. The pack's sampler node keeps a run's patches
on while the next runs ask for the same ones (``nodes/patching.py``), so the same graph run again compiles nothing.
"""

from __future__ import annotations

import logging

from torch import nn

from ..families import family_of_transformer

logger = logging.getLogger(__name__)

__all__ = [
    "COMPILE_MODES", "compile_transformer", "compile_vae_decoder", "is_compiled", "uncompile_transformer",
    "uncompile_vae_decoder",
]

# torch.compile's modes. "reduce-overhead" (CUDA graphs) is accepted but not what the blocks are meant for: each
# graph piece around ASA's eager attention would be a separate CUDA graph whose outputs are overwritten on replay.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_OPTIONS_ATTR = "_blade_compile_options"


def _blocks(transformer: nn.Module) -> nn.ModuleList:
    """The repeated transformer blocks, the list the model's family adapter names (``block_list``)."""
    try:
        family = family_of_transformer(transformer)
    except ValueError as err:
        raise ValueError(f"compile_transformer: {err}") from None
    blocks = getattr(transformer, family.block_list, None)
    if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
        return blocks
    raise ValueError(f"compile_transformer: {type(transformer).__name__} has no non-empty {family.block_list} list.")


def _block_compiled(block: nn.Module) -> bool:
    return getattr(block, "_compiled_call_impl", None) is not None


def is_compiled(transformer: nn.Module) -> bool:
    """Whether every transformer block of ``transformer`` is compiled (by :func:`compile_transformer`)."""
    return all(_block_compiled(block) for block in _blocks(transformer))


def _check_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise ValueError(f"mode={mode!r} is not a torch.compile mode; valid: {', '.join(COMPILE_MODES)}.")


def compile_vae_decoder(vae: nn.Module, *, mode: str = "default") -> bool:
    """Compile the decoder of a Wan VAE in place; True if compiled, False for a VAE this does not cover.

    The Wan decoder runs once per chunk of latent frames (:mod:`.wan_decode`); inductor fuses its RMS norms,
    activations, padding and cache copies around cuDNN's convolutions. What compiles is the decoder's parts, not
    its own forward (:func:`.wan_decode.decoder_parts` says why). Shapes are static: one set of graphs for the
    first latent frame, one for the second chunk, one for the rest (and one for an uneven last chunk), all
    compiled at the first decode of each resolution (17-60 s on an H100 in a new process); later decodes at that
    resolution compile nothing. The chunked decode lifts dynamo's recompile limit while it runs, since the up
    blocks share one forward. The CogVideoX VAE is left as it is.

    Opt-in everywhere (the CLI's and ``benchmarks/end_to_end.py``'s ``--compile-vae``, BLADE VAE Decode's
    ``compile``), since the first decode of each resolution pays the compile.
    """
    from .wan_decode import decoder_parts, is_chunkable, is_decoder_compiled

    _check_mode(mode)
    if not is_chunkable(vae):
        logger.info("compile_vae_decoder: %s is not a Wan VAE; left uncompiled", type(vae).__name__)
        return False
    if not is_decoder_compiled(vae) or getattr(vae, _OPTIONS_ATTR, None) != mode:
        for part in decoder_parts(vae):
            part.compile(mode=mode, dynamic=False)
        setattr(vae, _OPTIONS_ATTR, mode)
        logger.info("Compiled the %s decoder's parts (mode=%s)", type(vae).__name__, mode)
    return True


def uncompile_vae_decoder(vae: nn.Module) -> bool:
    """Undo :func:`compile_vae_decoder` (the decoder runs eagerly again); True if it was compiled."""
    from .wan_decode import decoder_parts, is_chunkable, is_decoder_compiled

    if not is_chunkable(vae) or not is_decoder_compiled(vae):
        return False
    for part in decoder_parts(vae):
        part._compiled_call_impl = None
    if hasattr(vae, _OPTIONS_ATTR):
        delattr(vae, _OPTIONS_ATTR)
    return True


def compile_transformer(transformer: nn.Module, *, mode: str = "default", dynamic: bool | None = False) -> None:
    """Compile each transformer block of a Wan / CogVideoX ``transformer`` in place (``block.compile``).

    Compilation itself happens lazily, at the first forward (and again for each new input shape when
    ``dynamic=False``), so time a warm-up call separately. Calling again with the same options does nothing;
    with other options the blocks are compiled again. Install ASA and apply LoRAs first: doing it afterwards
    works but recompiles the blocks at their next call. Changing a peft LoRA's strength
    (:func:`blade_ops.lora.set_lora_strength`) recompiles too (the scale is a Python float in the graph); a
    merged LoRA does not (weights are graph inputs).
    """
    _check_mode(mode)
    if dynamic not in (True, False, None):
        raise ValueError(f"dynamic={dynamic!r} must be True, False or None (torch.compile's automatic dynamic).")
    blocks = _blocks(transformer)
    options = {"mode": mode, "dynamic": dynamic}
    if is_compiled(transformer) and getattr(transformer, _OPTIONS_ATTR, None) == options:
        logger.debug("%s blocks already compiled with %s", type(transformer).__name__, options)
        return
    for block in blocks:
        block.compile(**options)
    setattr(transformer, _OPTIONS_ATTR, options)
    logger.info("Compiled %d %s blocks (mode=%s, dynamic=%s)", len(blocks), type(transformer).__name__, mode, dynamic)


def uncompile_transformer(transformer: nn.Module) -> bool:
    """Undo :func:`compile_transformer` (the blocks run eagerly again); True if any block was compiled."""
    blocks = _blocks(transformer)
    was = any(_block_compiled(block) for block in blocks)
    for block in blocks:
        block._compiled_call_impl = None
    if hasattr(transformer, _OPTIONS_ATTR):
        delattr(transformer, _OPTIONS_ATTR)
    return was
