"""ComfyUI node classes of the BLADE pack (category "BLADE"). Thin: they translate ComfyUI types to blade_ops."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
