"""The stacked Linear's hand-written backward (gradients straight into the layout the weights
keep) against autograd's own backward of the same forward, for each input form."""

from __future__ import annotations

import pytest
import torch

from worker.training.stacked import _StackedLinear, stacked_linear


@pytest.mark.parametrize(
    ("x_shape", "shared", "x_grad"),
    [((6, 5), True, False), ((3, 6, 5), False, False), ((6, 5), False, True), ((3, 6, 5), False, True)],
    ids=["shared-rows", "per-slot-rows", "shared-rows-with-grad", "hidden-layer"],
)
def test_the_stacked_linear_backward_is_autograds(
    x_shape: tuple[int, ...], shared: bool, x_grad: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    G, out, inp = 3, 4, 5
    w = torch.randn(G, out, inp, generator=gen, dtype=torch.float64)
    b = torch.randn(G, 1, out, generator=gen, dtype=torch.float64)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    upstream = torch.randn(G, x_shape[-2], out, generator=gen, dtype=torch.float64)

    def grads(f: object) -> list[torch.Tensor | None]:
        wi, bi, xi = (t.clone().requires_grad_(True) for t in (w, b, x))
        xi.requires_grad_(x_grad)
        y = f(xi, wi, bi)  # type: ignore[operator]
        y.backward(upstream)
        return [wi.grad, bi.grad, xi.grad]

    ours = grads(lambda xi, wi, bi: _StackedLinear.apply(xi, wi, bi, shared))
    theirs = grads(lambda xi, wi, bi: stacked_linear(wi, bi, xi, shared))
    for a, e in zip(ours, theirs, strict=True):
        if e is None:
            assert a is None
        else:
            assert a is not None
            torch.testing.assert_close(a, e)
    assert ours[0] is not None and ours[0].is_contiguous()  # the per-trial kernels read contiguous blocks
