"""Function-preserving growth (in the spirit of Net2Net): trained weights of a network written
into a wider and/or deeper network of the same architecture so that both compute the same
function, letting training go on with more capacity instead of starting over.

Every conv keeps its trained weights in its first output and input channels. Where an old
output reads a new input channel the weight is zero, so the new channels never reach the old
outputs; new output channels keep the larger network's random initialisation, so they carry
signal and their (zero) outgoing weights get gradients from the first step. Parameters of
added layers keep their random values too, except those the architecture marks to start at
zero (``ArchSpec.grow_zero``, e.g. the last conv of an added residual block, which makes the
block the identity). This holds where channel ``c`` of a layer feeds channel ``c`` of the next
(pixel shuffle included: its first ``C r^2`` inputs make its first ``C`` outputs); dense
concatenations such as RRDB's do not, and such architectures declare nothing growable. The
smaller weights must be complete and differ only in the growable arguments (``ArchSpec.
growable``, e.g. srresnet's ``num_feat`` and ``num_block``): scale and channel counts match.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import BlindSRError
from .common import ArchSpec, StateDict


def grow_state_dict(small: StateDict, big: nn.Module) -> dict[str, Tensor]:
    """A state dict for ``big`` (built with the larger sizes, freshly initialised) that makes it
    compute what the weights ``small`` compute, with one-line errors when it cannot."""
    from . import ARCHS

    name = getattr(big, "arch_name", type(big).__name__)
    spec = ARCHS.get(name)
    if spec is None or not spec.growable:
        raise BlindSRError(f"{name} cannot be grown (only channel-aligned architectures such as "
                           "srresnet can)")
    _check_small(small, big, spec)
    out: dict[str, Tensor] = {}
    for key, fresh in big.state_dict().items():
        new = fresh.detach().clone()
        if key not in small:
            out[key] = new.zero_() if spec.grow_zero(key) else new
            continue
        old = small[key].to(new.dtype)
        fits = old.dim() == new.dim() and old.dim() in (1, 4) and all(
            o <= n for o, n in zip(old.shape, new.shape, strict=True))
        if not fits or old.shape[2:] != new.shape[2:]:
            raise BlindSRError(f"cannot grow {key}: {tuple(old.shape)} does not fit into "
                               f"{tuple(new.shape)}")
        if old.dim() == 4:  # conv weight (out, in, kh, kw)
            o, i = old.shape[:2]
            new[:o, i:] = 0
            new[:o, :i] = old
        else:
            new[: old.shape[0]] = old
        out[key] = new
    extra = sorted(set(small) - set(out))
    if extra:
        raise BlindSRError(f"cannot grow: the smaller weights have {extra[0]}"
                           f"{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}, "
                           "which the larger network lacks")
    return out


def _check_small(small: StateDict, big: nn.Module, spec: ArchSpec) -> None:
    """``small`` must be complete weights of the same architecture that differ from ``big``
    only in the growable arguments, each no larger."""
    if not spec.detect(small):
        raise BlindSRError(f"cannot grow: the smaller weights are not {spec.name} weights")
    kwargs = spec.kwargs_from_state_dict(small)
    target = big.arch_kwargs
    for key, value in kwargs.items():
        if key in spec.growable and value > target[key]:
            raise BlindSRError(f"cannot grow: {key} {value} is larger than the target's "
                               f"{target[key]}")
        if key not in spec.growable and value != target[key]:
            raise BlindSRError(f"cannot grow: {key} {value} differs from the target's "
                               f"{target[key]} (only {', '.join(spec.growable)} may grow)")
    expected = set(spec.constructor(**kwargs).state_dict())
    missing = sorted(expected - set(small))
    if missing:
        raise BlindSRError(f"cannot grow: the smaller weights lack {missing[0]}"
                           f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}")


__all__ = ["grow_state_dict"]
