"""A head's configuration (config.json): readable without torch, so `feedback add` and a
checkpoint's key never import it."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..specs import ARCHITECTURES, SD2


@dataclass(frozen=True)
class HeadConfig:
    """Everything needed to rebuild a head from its checkpoint (stored as config.json).

    `kind` is what the head is (hi | pahi), not a render mode (`specs.Mode`: noise + steps);
    config.json keeps the key `mode` for it, so every checkpoint ever written still loads."""

    kind: str  # "hi" (one global mu, sigma) or "pahi" (prompt-adaptive); "mode" on disk
    latent_shape: tuple[int, int, int]  # (C, h, w) the head predicts; fixes the image size
    text_dim: int  # width D of the text embeddings it reads (pahi)
    hidden: int = 144  # MLP width: ~5M parameters at 512x512 with D = 1024, as in the paper
    base_model: str = ""  # the diffusion model it was trained for
    # what conditions that model (specs.ARCHITECTURES): its latent space and text feature
    architecture: str = SD2

    def to_dict(self) -> dict:
        """The config.json form (the kind under its on-disk key `mode`); `architecture` only
        when not sd2, so heads written before it existed keep their bytes and content keys."""
        d = asdict(self)
        out = {"mode": d.pop("kind"), **d, "latent_shape": list(self.latent_shape)}
        if self.architecture == SD2:
            del out["architecture"]
        return out

    @classmethod
    def from_dict(cls, meta: dict) -> "HeadConfig":
        """From the config.json form; TypeError/KeyError on missing or unknown keys."""
        meta = dict(meta)
        return cls(kind=meta.pop("mode"), **{**meta, "latent_shape": tuple(meta["latent_shape"])})

    def problem(self) -> str | None:
        """What is wrong with these values (a config.json edited by hand), or None."""
        if self.kind not in ("hi", "pahi"):
            return f"mode must be hi or pahi, got {self.kind!r}"
        if len(self.latent_shape) != 3 or not _positive_ints(*self.latent_shape):
            return f"latent_shape must be 3 positive integers, got {list(self.latent_shape)}"
        if self.architecture not in ARCHITECTURES:
            return f"architecture must be one of {', '.join(ARCHITECTURES)}, got " \
                   f"{self.architecture!r}"
        if not _positive_ints(self.text_dim, self.hidden):
            return f"text_dim and hidden must be positive integers, got {self.text_dim!r}, " \
                   f"{self.hidden!r}"
        return None


def _positive_ints(*values) -> bool:
    return all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in values)
