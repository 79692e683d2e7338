"""ComfyUI node classes of the BLADE pack (category "BLADE"). Thin: they translate ComfyUI types to blade_ops.

Importing this package never imports ComfyUI: ``comfy``/``folder_paths`` are reached lazily through
``comfy_bridge``, so the classes load and run in plain Python too.
"""

from __future__ import annotations

from . import asa, loaders, lora, native_asa, native_lora, native_schedule, native_text, sampler, text, video

_MODULES = (loaders, text, asa, lora, sampler, video, native_asa, native_lora, native_schedule, native_text)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in _MODULES:
    for _name, (_cls, _display) in _module.NODES.items():
        NODE_CLASS_MAPPINGS[_name] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_name] = _display

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
