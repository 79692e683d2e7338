"""ComfyUI entry point of the BLADE node pack: 8-step, block-sparse text-to-video for Wan2.1 and CogVideoX.

ComfyUI imports this folder as a package; everything else lives in ``nodes`` (thin node classes) and
``blade_ops`` (the library, usable without ComfyUI).
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
