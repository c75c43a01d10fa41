import pytest
import torch

from blindsr.checks import check_unit_range
from blindsr.errors import BlindSRError


def test_unit_range_accepts_an_overshoot_and_names_other_scales():
    x = torch.rand(1, 3, 8, 8)
    check_unit_range(x, "f")
    check_unit_range(x * 1.4 - 0.2, "f")  # an unclamped network's output
    for bad, message in [(x * 255, "values reach .*divide 0..255 values by 255"),
                         (x * 2 - 1, "values go down to .*map -1..1"),
                         (x.clone().fill_(float("inf")), "the image holds NaN or infinite"),
                         (x[..., :0], "the image is empty")]:
        with pytest.raises(BlindSRError, match=f"^f: {message}"):
            check_unit_range(bad, "f")
