"""The sampler's schedule as a frozen spec (diffusers' Euler schedulers, guidance 0)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

from .errors import InputError

# Samplers pahi-rt runs: diffusers scheduler class -> A1111's name for it (PNG `Sampler:`).
SAMPLERS = MappingProxyType({"EulerDiscreteScheduler": "Euler",
                             "EulerAncestralDiscreteScheduler": "Euler a"})
EULER_A = "EulerAncestralDiscreteScheduler"  # what sdxl-turbo ships


@dataclass(frozen=True)
class SchedulerSpec:
    """SD-Turbo's Euler scheduler (diffusers `EulerDiscreteScheduler`), guidance 0, or its
    ancestral variant (`EulerAncestralDiscreteScheduler`, what sdxl-turbo ships).

    The math (sigma_t = sqrt((1 - abar_t) / abar_t), epsilon prediction):
      x_T     = noise * init_sigma, with init_sigma = sigma_max for trailing spacing
      input   = x / sqrt(sigma_i^2 + 1)                    (model-input scaling)
      x0      = x - sigma_i * eps_theta(input, t_i, c)     (epsilon prediction)
      x       = x + (x - x0) / sigma_i * (sigma_{i+1} - sigma_i)   (Euler step; sigma_L = 0)
    With one step the result is x0 itself. Ancestral steps split sigma_{i+1} into
      sigma_up   = sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2)
      sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2)
    step to sigma_down, then add sigma_up * (fresh seeded noise); the last step (sigma_L = 0)
    adds none, so one ancestral step equals one Euler step.
    """

    class_name: str = "EulerDiscreteScheduler"  # a key of SAMPLERS
    num_train_timesteps: int = 1000  # T of the training schedule
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # betas = linspace(sqrt(b0), sqrt(b1), T)^2 ("linear" too)
    prediction_type: str = "epsilon"  # or "v_prediction": x0 = x/(s^2+1) - s*v/sqrt(s^2+1)
    timestep_spacing: str = "trailing"  # 1 step -> [999]; 2 steps -> [999, 499]
    steps_offset: int = 0  # only used by "leading" spacing

    @property
    def ancestral(self) -> bool:
        return self.class_name == "EulerAncestralDiscreteScheduler"

    @property
    def sampler(self) -> str:
        """A1111's name of the sampler (`Euler`, `Euler a`)."""
        return SAMPLERS[self.class_name]

    def timesteps(self, steps: int) -> tuple[float, ...]:
        """Timesteps as diffusers' EulerDiscreteScheduler.set_timesteps computes them."""
        import numpy as np

        T = self.num_train_timesteps
        if steps < 1 or steps > T:
            raise InputError(f"--steps must be between 1 and {T}, got {steps}")
        if self.timestep_spacing == "trailing":
            t = np.round(np.arange(T, 0, -T / steps)).astype(np.float32) - 1
        elif self.timestep_spacing == "linspace":
            t = np.linspace(0, T - 1, steps, dtype=np.float32)[::-1]
        elif self.timestep_spacing == "leading":
            t = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.float32)
            t += self.steps_offset
        else:
            raise InputError(f"unsupported timestep_spacing '{self.timestep_spacing}'")
        return tuple(float(x) for x in t)

    def sigmas(self, steps: int) -> tuple[float, ...]:
        """sigma at each timestep (float32, interpolated as diffusers does), plus a final 0."""
        import numpy as np
        import torch

        T = self.num_train_timesteps
        if self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, T,
                                   dtype=torch.float32) ** 2
        else:
            betas = torch.linspace(self.beta_start, self.beta_end, T, dtype=torch.float32)
        abar = torch.cumprod(1.0 - betas, dim=0)
        all_sigmas = np.array(((1 - abar) / abar) ** 0.5)
        s = np.interp(np.array(self.timesteps(steps)), np.arange(T), all_sigmas)
        return tuple(float(x) for x in np.concatenate([s, [0.0]]).astype(np.float32))

    def init_sigma(self, steps: int) -> float:
        """Scale of the initial latent: sigma_max for trailing/linspace spacing (as diffusers)."""
        s = max(self.sigmas(steps))
        return s if self.timestep_spacing in ("trailing", "linspace") else math.sqrt(s * s + 1)
