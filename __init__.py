"""ComfyUI entry point of the BLADE node pack: 8-step, block-sparse text-to-video for Wan2.1 and CogVideoX.

ComfyUI imports this folder as a package; everything else lives in ``nodes`` (thin node classes) and
``blade_ops`` (the library, usable without ComfyUI).
"""

WEB_DIRECTORY = None

# pytest imports this file too (the checkout is a package); where the folder's name is no Python identifier
# (custom_nodes/ComfyUI-BLADE, a git worktree wt-x) it imports it as a plain module, which has no nodes to give.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
