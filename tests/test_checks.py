import numpy as np
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


def test_whole_numbers_are_ints_in_range_and_not_bools():
    from blindsr.checks import is_whole

    assert is_whole(0, 0) and is_whole(2**64 - 1, 0, 2**64)
    assert not is_whole(True, 0) and not is_whole(2.0, 0) and not is_whole(-1, 0)
    assert not is_whole(2**64, 0, 2**64)
    assert not is_whole(np.int64(4), 0)  # callers do int arithmetic on it (seed + k)


def test_crop_border_is_a_whole_number():
    from blindsr.checks import check_crop_border

    assert check_crop_border(np.int32(4), "m") == 4
    for bad in (4.0, None, -1, True, np.bool_(True)):
        with pytest.raises(BlindSRError, match=f"^m: crop_border must be a whole number >= 0, "
                                               f"got {bad!r}$"):
            check_crop_border(bad, "m")
