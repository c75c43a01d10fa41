"""blindsr: blind (real-world) image super-resolution.

The two calls most people need::

    import blindsr
    sr = blindsr.upscale("photo.jpg")            # or a numpy array / PIL image
    model = blindsr.load_model("model.safetensors")
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model", "upscale"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import blindsr` (and `blindsr --version`) stays light.
    if name == "upscale":
        from blindsr.inference import upscale

        return upscale
    if name == "load_model":
        from blindsr.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'blindsr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
