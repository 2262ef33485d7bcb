"""SimSiam loss against an independent float64 reference written from eqs. 1-2 of
Chen & He 2021: L = -1/2 [cos(p1, z2) + cos(p2, z1)], batch means; V views: the mean
of -cos(p_i, z_j) over ordered pairs i != j (value and gradient)."""

from __future__ import annotations

import math

import pytest
import torch

import twinfold


def ref_cos(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine written with explicit dot products and square roots."""
    return (p * z).sum(1) / ((p * p).sum(1).sqrt() * (z * z).sum(1).sqrt())


def reference_loss(p: list[torch.Tensor], z: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 2 for two views; the ordered-pair mean for V views."""
    terms = [-ref_cos(p[i], z[j]).mean() for i in range(len(p)) for j in range(len(z)) if i != j]
    return torch.stack(terms).sum() / len(terms)


def analytic_grad_p(p: torch.Tensor, z: torch.Tensor, weight: float) -> torch.Tensor:
    """d/dp of -weight * mean_b cos(p, z) = -weight/B (z^ - cos p^) / ||p||."""
    pn, zn = p.norm(dim=1, keepdim=True), z.norm(dim=1, keepdim=True)
    ph, zh = p / pn, z / zn
    cos = (ph * zh).sum(1, keepdim=True)
    return -weight * (zh - cos * ph) / pn / p.shape[0]


def _tensors(n: int, batch: int, dim: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, dim, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(n)
    ]


@pytest.mark.parametrize("batch,dim", [(8, 16), (3, 5), (32, 2048)])
def test_two_views_value_and_gradient_match_eq2(batch: int, dim: int) -> None:
    p, z = _tensors(2, batch, dim, batch), _tensors(2, batch, dim, batch + 100)
    loss = twinfold.create("loss", "simsiam")
    ours = loss(p, z)
    p1, p2 = (t.detach() for t in p)
    z1, z2 = (t.detach() for t in z)
    eq2 = -0.5 * (ref_cos(p1, z2).mean() + ref_cos(p2, z1).mean())
    torch.testing.assert_close(ours, eq2)
    ours.backward()
    torch.testing.assert_close(p[0].grad, analytic_grad_p(p1, z2, 0.5))
    torch.testing.assert_close(p[1].grad, analytic_grad_p(p2, z1, 0.5))
    zr = [t.detach().clone().requires_grad_(True) for t in z]
    reference_loss([p1, p2], zr).backward()  # the loss itself does not stop gradients
    for a, b in zip(z, zr, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("views,batch,dim", [(3, 6, 7), (4, 5, 3)])
def test_many_views_average_over_ordered_pairs(views: int, batch: int, dim: int) -> None:
    p, z = _tensors(views, batch, dim, views), _tensors(views, batch, dim, views + 7)
    loss = twinfold.create("loss", "simsiam")
    ours = loss(p, z)
    ours.backward()
    pr = [t.detach().clone().requires_grad_(True) for t in p]
    zr = [t.detach().clone().requires_grad_(True) for t in z]
    ref = reference_loss(pr, zr)
    ref.backward()
    torch.testing.assert_close(ours, ref)
    for a, b in zip([*p, *z], [*pr, *zr], strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    # the analytic gradient of p_i: sum over j != i with weight 1 / (V (V - 1))
    w = 1 / (views * (views - 1))
    expected = sum(analytic_grad_p(p[0].detach(), z[j].detach(), w) for j in range(1, views))
    torch.testing.assert_close(p[0].grad, expected)


def test_same_lists_are_the_loss_of_view0_and_view1_once() -> None:
    """Target rule ``none`` and no predictor: both lists are the same tensors."""
    z = _tensors(2, 6, 4, 3)
    ours = twinfold.create("loss", "simsiam")(z, z)
    ours.backward()
    zr = [t.detach().clone().requires_grad_(True) for t in z]
    ref = -ref_cos(zr[0], zr[1]).mean()
    ref.backward()
    torch.testing.assert_close(ours, ref)
    for a, b in zip(z, zr, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_bounds_and_named_terms() -> None:
    x = torch.randn(6, 4)
    loss = twinfold.create("loss", "simsiam")
    assert loss([x, x], [x, x]).item() == pytest.approx(-1.0, abs=1e-6)
    assert loss([x, x], [-x, -x]).item() == pytest.approx(1.0, abs=1e-6)
    assert loss([x, 2 * x], [3 * x, x]).item() == pytest.approx(-1.0, abs=1e-6)  # scale-free
    terms = loss.terms([x, x], [-x, -x])
    assert terms["cosine"].item() == pytest.approx(-1.0, abs=1e-6)
    assert not terms["cosine"].requires_grad and not terms["output_std"].requires_grad


def test_output_std_detects_collapse() -> None:
    """Sec. 4.1, Fig. 2: std of z/||z|| per channel is ~1/sqrt(d) for a spread output
    and 0 for a collapsed (constant) one."""
    d = 256
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(4096, d, generator=g, dtype=torch.float64)
    terms = twinfold.create("loss", "simsiam").terms([spread, spread], [spread, spread])
    assert terms["output_std"].item() == pytest.approx(1 / math.sqrt(d), rel=0.02)
    zn = spread / spread.norm(dim=1, keepdim=True)
    torch.testing.assert_close(terms["output_std"], zn.std(0, unbiased=False).mean())
    const = torch.randn(1, d, generator=g).expand(64, d)
    collapsed = twinfold.create("loss", "simsiam").terms([const, const], [const, const])
    assert collapsed["output_std"].item() == pytest.approx(0.0, abs=1e-4)


def test_bad_inputs_are_named() -> None:
    loss = twinfold.create("loss", "simsiam")
    with pytest.raises(ValueError, match="equal-length"):
        loss([torch.randn(2, 3)], [torch.randn(2, 3)])
    with pytest.raises(ValueError, match="view 1"):
        loss([torch.randn(2, 3), torch.randn(2, 3)], [torch.randn(2, 3), torch.randn(2, 4)])
