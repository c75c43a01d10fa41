"""HR -> LR degradations: named deterministic presets and Real-ESRGAN's random second order.

``blindsr.degrade.neural`` (the AND degradation network) lives in its own submodule.
"""

from blindsr.degrade.presets import PRESETS, apply, preset_names
from blindsr.degrade.random import SecondOrderConfig, second_order

__all__ = ["PRESETS", "SecondOrderConfig", "apply", "preset_names", "second_order"]
