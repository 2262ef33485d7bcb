"""BYOL loss against an independent reference written from eqs. 2 and 4 of
Grill et al. 2020 (value and gradient)."""

from __future__ import annotations

import pytest
import torch

import twinfold


def reference_loss(q: list[torch.Tensor], z: list[torch.Tensor]) -> torch.Tensor:
    """sum over both directions of mean_b || q/||q|| - z'/||z'|| ||^2, written with
    explicit norms (no cosine helper)."""
    total = torch.zeros((), dtype=torch.float64)
    for i, j in ((0, 1), (1, 0)):
        qn = q[i] / q[i].pow(2).sum(1, keepdim=True).sqrt()
        zn = z[j] / z[j].pow(2).sum(1, keepdim=True).sqrt()
        total = total + (qn - zn).pow(2).sum(1).mean()
    return total


def analytic_grad_q(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """d/dq of mean_b ||q^ - z^||^2 = (2/B) (I - q^ q^T)(q^ - z^) / ||q||."""
    norm = q.norm(dim=1, keepdim=True)
    qh, zh = q / norm, z / z.norm(dim=1, keepdim=True)
    diff = qh - zh
    proj = diff - qh * (qh * diff).sum(1, keepdim=True)
    return 2 * proj / norm / q.shape[0]


@pytest.mark.parametrize("batch,dim", [(8, 16), (3, 5)])
def test_value_and_gradient_match_reference(batch: int, dim: int) -> None:
    g = torch.Generator().manual_seed(batch)
    q = [
        torch.randn(batch, dim, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(2)
    ]
    z = [
        torch.randn(batch, dim, generator=g, dtype=torch.float64, requires_grad=True)
        for _ in range(2)
    ]
    loss = twinfold.create("loss", "byol")
    ours = loss(q, z)
    ref = reference_loss([t.detach() for t in q], [t.detach() for t in z])
    torch.testing.assert_close(ours, ref)
    ours.backward()
    for i, j in ((0, 1), (1, 0)):
        torch.testing.assert_close(q[i].grad, analytic_grad_q(q[i].detach(), z[j].detach()))
    # gradient of z via an autograd pass through the reference
    zr = [t.detach().clone().requires_grad_(True) for t in z]
    reference_loss([t.detach() for t in q], zr).backward()
    for a, b in zip(z, zr, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_total_is_the_sum_of_both_directions_and_bounded() -> None:
    x = torch.randn(6, 4)
    loss = twinfold.create("loss", "byol")
    assert loss([x, x], [x, x]).item() == pytest.approx(0.0, abs=1e-5)
    assert loss([x, x], [-x, -x]).item() == pytest.approx(8.0, abs=1e-5)  # 4 per direction
    terms = loss.terms([x, x], [-x, -x])
    assert terms["cosine"].item() == pytest.approx(-1.0, abs=1e-6)


def test_bad_inputs_are_named() -> None:
    loss = twinfold.create("loss", "byol")
    with pytest.raises(ValueError, match="equal-length"):
        loss([torch.randn(2, 3)], [torch.randn(2, 3)])
    with pytest.raises(ValueError, match="view 1"):
        loss([torch.randn(2, 3), torch.randn(2, 3)], [torch.randn(2, 3), torch.randn(2, 4)])
