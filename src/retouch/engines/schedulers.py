"""bg-replace's scheduler names (the contract's table) and the diffusers class each one means.

Plain strings, so that the model's Input can list the names without importing torch or diffusers.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

SCHEDULERS: Mapping[str, tuple[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "DDIM": ("DDIMScheduler", {}),
        "DPM Multi": ("DPMSolverMultistepScheduler", {}),
        # Its final step to sigma zero needs a first-order last step; diffusers would switch this on itself, with a warning each request.
        "DPM Single": ("DPMSolverSinglestepScheduler", {"lower_order_final": True}),
        "Euler a": ("EulerAncestralDiscreteScheduler", {}),
        "Euler": ("EulerDiscreteScheduler", {}),
        "Heun": ("HeunDiscreteScheduler", {}),
        "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
        "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
        "LMS": ("LMSDiscreteScheduler", {}),
        # Stable Diffusion's own PNDM config skips the Runge-Kutta warm-up, which needs more steps than a short run has.
        "PNDM": ("PNDMScheduler", {"skip_prk_steps": True}),
        "DDPM": ("DDPMScheduler", {}),
        "UniPC": ("UniPCMultistepScheduler", {}),
    }
)
DEFAULT_SCHEDULER = "DPM2 Karras"
