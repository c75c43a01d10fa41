"""HR -> LR degradations: named deterministic presets, Real-ESRGAN's random second order, and
the AND degradation network (``blindsr.degrade.neural``).
"""

from blindsr.degrade.neural import NeuralDegradation
from blindsr.degrade.presets import PRESETS, apply, preset_names
from blindsr.degrade.random import SecondOrderConfig, first_order, second_order

__all__ = ["PRESETS", "NeuralDegradation", "SecondOrderConfig", "apply", "first_order",
           "preset_names", "second_order"]
