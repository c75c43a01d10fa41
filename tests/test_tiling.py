import pytest
import torch
import torch.nn.functional as F

from blindsr.tiling import run_tiled, spans, tiles


@pytest.mark.parametrize("length,tile,pad", [(50, 16, 8), (16, 16, 4), (7, 16, 16), (100, 32, 0)])
def test_spans_cover_the_axis_with_equal_windows(length, tile, pad):
    parts = spans(length, tile, pad)
    assert parts[0].start == 0 and parts[-1].stop == length
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
    assert len({p.size for p in parts}) == 1
    assert all(0 <= p.win <= p.start and p.stop <= p.win + p.size <= length for p in parts)


@pytest.mark.parametrize("h,w,tile,pad,scale", [(37, 50, 16, 8, 2), (20, 20, 8, 8, 3),
                                                (9, 40, 16, 4, 4), (33, 33, 10, 0, 1)])
def test_blend_weights_sum_to_one(h, w, tile, pad, scale):
    image = torch.rand(1, 3, h, w)

    def up(x):
        return F.interpolate(x, scale_factor=scale, mode="nearest")

    out = run_tiled(up, image, scale, tile, pad, batch=3)
    torch.testing.assert_close(out, up(image))


def test_local_model_tiled_equals_untiled():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 12, 3, padding=1), torch.nn.PixelShuffle(2))
    image = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        whole = conv(image)
        tiled = run_tiled(conv, image, 2, tile=16, pad=8, batch=4)
    assert (tiled - whole).abs().max() < 1e-5


def test_progress_callback_counts_tiles():
    seen = []
    run_tiled(lambda x: x, torch.rand(1, 3, 40, 40), 1, 16, 4, batch=2, on_tiles=seen.append)
    assert sum(seen) == len(tiles(40, 40, 16, 4)) == 9
    assert max(seen) == 2
