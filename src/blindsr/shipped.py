"""The checkpoints shipped inside the package (``blindsr/weights``), each with its model card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "blindsr-x4"


@dataclass(frozen=True)
class ShippedModel:
    """A checkpoint inside the package, with its model card."""

    name: str
    weights: Path
    card: Path

    def card_text(self) -> str:
        return self.card.read_text() if self.card.is_file() else "(no model card)"

    def summary(self) -> str:
        """The first line of the card after its title, for listings."""
        lines = [ln.strip() for ln in self.card_text().splitlines() if ln.strip()]
        body = [ln for ln in lines if not ln.startswith("#")]
        return body[0] if body else ""


def shipped_models() -> dict[str, ShippedModel]:
    """Checkpoints shipped in ``blindsr/weights`` (``NAME.safetensors`` + ``NAME.md``)."""
    return {
        p.stem: ShippedModel(p.stem, p, p.with_suffix(".md"))
        for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))
    }


def default_model_name() -> str:
    """The shipped default model, or ``bicubic`` while none is shipped."""
    return DEFAULT_MODEL if DEFAULT_MODEL in shipped_models() else "bicubic"
