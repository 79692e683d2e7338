"""Student, fake score and teacher as three roles of ONE frozen base transformer (BLADE, Sec. 3.3).

- student: base + LoRA adapter "student" + ASA (sparse);
- fake score: base + LoRA adapter "fake" + ASA (the reference keeps a full copy; two peft adapters on one base
  give the same maths with one copy of the weights);
- teacher: the base with adapters disabled and dense attention.
A role is switched by activating its adapter and installing its attention processors; both adapters keep
``requires_grad`` at all times (gradients only reach the active one), so DDP sees one fixed parameter set.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from blade_ops.families import FamilySpec

logger = logging.getLogger(__name__)

STUDENT, FAKE, TEACHER = "student", "fake", "teacher"
ROLES = (STUDENT, FAKE, TEACHER)
ADAPTERS = (STUDENT, FAKE)


def lora_state(transformer: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """peft state dict (keys relative to the transformer, no adapter name) of one adapter."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer, adapter_name=adapter)


class TDMModels(nn.Module):
    """One transformer carrying two LoRA adapters, called as ``model(role, x, t, text)``.

    x: latents in the family's layout (Wan [B, C, T, H, W], CogVideoX [B, T, C, H, W]); t: [B] timesteps;
    text: [B, L, D]. Returns the model output (velocity) like x.
    """

    def __init__(
        self,
        transformer: nn.Module,
        family: FamilySpec,
        *,
        rank: int,
        alpha: float,
        targets: tuple[str, ...] | list[str],
        asa_config=None,
        attention_backend: str = "auto",
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        from peft import LoraConfig

        self.family = family
        self.transformer = transformer
        transformer.requires_grad_(False)
        for name in ADAPTERS:
            config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True)
            with warnings.catch_warnings():  # peft warns that a second adapter is being added: that is the design
                warnings.filterwarnings("ignore", message=".*multiple adapters.*")
                transformer.add_adapter(config, adapter_name=name)
        self._dense = dict(transformer.attn_processors)
        self._sparse = self._dense
        self.asa_handle = None
        if asa_config is not None:
            from blade_ops.prepare import AsaRequest, prepare_transformer

            # The student's own adapters are trained here, so no LoRA file and no recorded settings: the config given.
            request = AsaRequest(family.name, asa_config, attention_backend, source="custom")
            self.asa_handle = prepare_transformer(transformer, asa=request).asa_handle
            self._sparse = dict(transformer.attn_processors)
        if gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        self.base_dtype = next(p.dtype for n, p in transformer.named_parameters() if "lora_" not in n)
        self._role: str | None = None
        self.set_role(STUDENT)

    # ---- parameters ------------------------------------------------------------------------------------------
    def lora_parameters(self, adapter: str) -> list[nn.Parameter]:
        """The trainable tensors of one adapter (lora_A and lora_B of every targeted module)."""
        if adapter not in ADAPTERS:
            raise ValueError(f"adapter={adapter!r}; valid: {ADAPTERS}.")
        params = [p for n, p in self.transformer.named_parameters() if f".{adapter}." in n and "lora_" in n]
        if not params:
            raise RuntimeError(f"No LoRA parameters found for adapter {adapter!r}.")
        return params

    # ---- roles -----------------------------------------------------------------------------------------------
    def set_role(self, role: str) -> None:
        """Activate a role's adapter and attention (sparse for student/fake, dense for the teacher)."""
        if role not in ROLES:
            raise ValueError(f"role={role!r}; valid roles: {ROLES}.")
        if role == self._role:
            return
        t = self.transformer
        if role == TEACHER:
            t.disable_adapters()
        else:
            t.enable_adapters()
            t.set_adapter(role)
        if self._sparse is not self._dense:
            t.set_attn_processor(dict(self._dense if role == TEACHER else self._sparse))
        for name in ADAPTERS:  # peft flips requires_grad of inactive adapters; keep the parameter set fixed
            for p in self.lora_parameters(name):
                p.requires_grad_(True)
        self._role = role

    def set_step(self, step: int) -> None:
        """Tell ASA which sampling step runs next (dense_steps), when ASA is installed."""
        if self.asa_handle is not None and hasattr(self.asa_handle, "set_step"):
            self.asa_handle.set_step(step)

    def forward(self, role: str, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        self.set_role(role)
        kwargs = self.family.transformer_kwargs(self.transformer, x)  # e.g. CogVideoX's rotary tables
        timestep = self.family.timestep_input(self.transformer, t, x)  # e.g. one per video token (Wan2.2 TI2V)
        dtype = self.base_dtype
        out = self.transformer(
            hidden_states=x.to(dtype), timestep=timestep, encoder_hidden_states=text.to(dtype), return_dict=False,
            **kwargs,
        )[0]
        return out.float()
