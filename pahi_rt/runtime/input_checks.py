"""The input checks behind every backend's public methods (`backend.Backend` mixes them in):
host token ids and eps, device latents and text outputs against the run's shapes, dtypes and
device, each failure one line (InputError) naming the backend and the value."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError


class InputChecks:
    """Checks against `self.config` (batch, size), `self.spec` (tokens, latent shape) and
    `self.device` (None: not checked); `self.name` names the backend in messages."""

    def _batch(self, n: int, what: str) -> int:
        if not 1 <= n <= self.config.batch:
            raise InputError(f"{self.name}: {what} batch {n} outside 1..{self.config.batch} "
                             f"(this backend was opened for batch {self.config.batch})")
        return n

    def _checked_ids(self, ids) -> np.ndarray:
        """Token ids [B, *spec.token_ids_shape] ([B, 77]; SDXL [B, 2, 77]) of an integer
        dtype, as int64."""
        ids, per_image = np.asarray(ids), self.spec.token_ids_shape
        if ids.shape[1:] != per_image or not np.issubdtype(ids.dtype, np.integer):
            raise InputError(f"{self.name}: token ids must be integers "
                             f"[B, {', '.join(map(str, per_image))}], got {ids.dtype} "
                             f"{list(ids.shape)}")
        self._batch(ids.shape[0], "token ids")
        return ids.astype(np.int64, copy=False)

    def _checked_eps(self, eps) -> np.ndarray:
        """eps [B, C, h, w] of a float dtype (host), as float32."""
        eps, latent = np.asarray(eps), self.latent_shape
        if eps.shape[1:] != latent or eps.ndim != 4 or not np.issubdtype(eps.dtype, np.floating):
            raise InputError(f"{self.name}: eps must be float [B, {', '.join(map(str, latent))}]"
                             f", got {eps.dtype} {list(eps.shape)}")
        self._batch(eps.shape[0], "eps")
        return eps.astype(np.float32, copy=False)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.spec.latent_shape(self.config.height, self.config.width)

    def _check_latent(self, label: str, x: Any) -> int:
        """A float device value [B, C, h, w] of this run's latent shape; returns B."""
        shape, latent = tuple(getattr(x, "shape", ())), self.latent_shape
        if len(shape) != 4 or shape[1:] != latent or "float" not in str(getattr(x, "dtype", "")):
            raise InputError(f"{self.name}: {label} must be a float tensor [B, "
                             f"{', '.join(map(str, latent))}], got {type(x).__name__} "
                             f"{getattr(x, 'dtype', '')} {list(shape)}")
        self._check_device(label, x)
        return self._batch(shape[0], label)

    def _check_text(self, text: Any, n: int | None = None) -> None:
        """`text` is what `encode_text` returns: device tensors by the spec's conditioning names
        (`ModelSpec.conditioning`), batch n when given."""
        names = [t.name for t in self.spec.conditioning]
        if not isinstance(text, dict) or any(name not in text for name in names):
            raise InputError(f"{self.name}: text must be encode_text's outputs by name "
                             f"({', '.join(names)}), got {type(text).__name__} "
                             f"{sorted(text) if isinstance(text, dict) else ''}".rstrip())
        for label, value in text.items():
            rows = (getattr(value, "shape", None) or (None,))[0]
            if rows != (rows if n is None else n):
                raise InputError(f"{self.name}: {label} has batch {rows}, the run {n}")
            self._check_device(label, value)

    def _check_device(self, label: str, value: Any) -> None:
        have, want = getattr(value, "device", None), self.device
        if have is None or want is None:
            return
        if have.type != want.type or None not in (have.index, want.index) and (
                have.index != want.index):
            raise InputError(f"{self.name}: {label} is on {have}, this backend runs on {want}")
