"""Typed errors. Library code raises these; only the CLI turns them into a message and an exit
code."""


class PahiError(Exception):
    """Base class: a problem the user can fix, described in one actionable line."""


class InputError(PahiError):
    """A bad argument or input file (size, path, prompt list, preset name, tensor shape)."""


class ModelLoadError(PahiError):
    """Weights or configs could not be found or do not fit what was asked for."""


class MissingDependencyError(PahiError):
    """An optional package is needed; the message names the extra to install."""


class ArtifactError(PahiError):
    """An exported artifact is missing, corrupt (sha256 mismatch) or stale (other inputs)."""


class EngineError(PahiError):
    """A TensorRT engine could not be built, or does not fit this GPU / TensorRT version."""


class BackendError(PahiError):
    """A backend cannot serve the run asked for (no GPU, unsupported precision or mode)."""


def require(module: str, extra: str):
    """Import an optional module lazily, or raise naming the pip extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"'{module}' is not installed ({e}); install it with: pip install 'pahi-rt[{extra}]'"
        ) from None
