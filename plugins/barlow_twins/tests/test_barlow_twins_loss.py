"""Barlow Twins loss against an independent float64 reference written from eqs. 1-2 of
Zbontar et al. 2021 (value, per-term values and gradients)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import twinfold
from twinfold_barlow_twins import BarlowTwinsLoss, BarlowTwinsLossConfig

EPS = 1e-5


def reference_terms(
    z1: torch.Tensor, z2: torch.Tensor, lambda_: float = 0.0051, normalize: bool = True
) -> dict[str, torch.Tensor]:
    """Eq. 2 element by element: C_ij = sum_b zn1_bi zn2_bj / B with zn the batch-
    standardised embedding (biased variance, eps 1e-5); eq. 1 with explicit loops."""
    n, d = z1.shape

    def standardise(z: torch.Tensor) -> torch.Tensor:
        if not normalize:
            return z
        cols = []
        for i in range(d):
            col = z[:, i]
            mu = sum(col[b] for b in range(n)) / n
            var = sum((col[b] - mu) ** 2 for b in range(n)) / n  # biased
            cols.append((col - mu) / torch.sqrt(var + EPS))
        return torch.stack(cols, dim=1)

    a, b = standardise(z1), standardise(z2)
    c = torch.einsum("bi,bj->ij", a, b) / n
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return {"loss": on + lambda_ * off, "on_diag": on, "off_diag": off}


def _views(batch: int, dim: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    return [
        (base + 0.5 * torch.randn(batch, dim, generator=g, dtype=torch.float64)) * 3 + 1,
        base * torch.rand(dim, generator=g, dtype=torch.float64)
        + torch.randn(batch, dim, generator=g, dtype=torch.float64),
    ]


@pytest.mark.parametrize(
    "batch,dim,lambda_", [(8, 4, 0.0051), (5, 7, 0.0051), (32, 16, 0.0051), (12, 6, 0.3)]
)
def test_value_terms_and_gradient_match_reference(batch: int, dim: int, lambda_: float) -> None:
    z = [t.requires_grad_(True) for t in _views(batch, dim, batch * dim)]
    loss = twinfold.create("loss", "barlow-twins", lambda_=lambda_)
    ours = loss.terms(z, z)  # target rule 'none': the same tensors on both sides
    zr = [t.detach().clone().requires_grad_(True) for t in z]
    ref = reference_terms(zr[0], zr[1], lambda_)
    for key in ("loss", "on_diag", "off_diag"):
        torch.testing.assert_close(ours[key], ref[key], msg=key)
    assert not ours["on_diag"].requires_grad and not ours["off_diag"].requires_grad
    ours["loss"].backward()
    ref["loss"].backward()
    for mine, theirs in zip(z, zr, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad)


def test_gradient_matches_finite_differences() -> None:
    z1, z2 = (t.requires_grad_(True) for t in _views(6, 3, 0))
    loss = BarlowTwinsLoss(BarlowTwinsLossConfig(lambda_=0.1))
    assert torch.autograd.gradcheck(lambda a, b: loss([a, b], [a, b]), (z1, z2))


def test_without_normalisation_uses_raw_embeddings() -> None:
    z = _views(9, 5, 1)
    loss = twinfold.create("loss", "barlow-twins", normalize=False)
    ref = reference_terms(z[0], z[1], normalize=False)
    torch.testing.assert_close(loss(z, z), ref["loss"])


def test_defaults_follow_the_recipe() -> None:
    cfg = BarlowTwinsLossConfig()
    assert cfg.lambda_ == 0.0051 and cfg.normalize is True
    with pytest.raises(ValidationError, match="lambda_"):
        BarlowTwinsLossConfig(lambda_=-1.0)
    with pytest.raises(ValidationError, match="lambd"):
        BarlowTwinsLossConfig.model_validate({"name": "barlow-twins", "lambd": 0.1})


def test_whitened_identical_views_give_zero_and_the_loss_is_scale_invariant() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 8, generator=g, dtype=torch.float64)
    x = x - x.mean(0)
    q, _ = torch.linalg.qr(x)  # orthonormal, zero-mean columns
    white = q * 8.0  # unit biased variance, zero correlation
    loss = twinfold.create("loss", "barlow-twins")
    assert loss([white, white], [white, white]).item() == pytest.approx(0.0, abs=1e-6)
    z = _views(16, 6, 3)
    scaled = [z[0] * 7 - 3, z[1] * torch.arange(1, 7, dtype=torch.float64)]
    perm = torch.randperm(16, generator=g)
    permuted = [t[perm] for t in z]
    # invariant up to the eps inside the square root
    torch.testing.assert_close(loss(scaled, scaled), loss(z, z), rtol=1e-4, atol=0)
    torch.testing.assert_close(loss(permuted, permuted), loss(z, z))


def test_constant_dimension_is_finite() -> None:
    z = [t.clone() for t in _views(10, 4, 4)]
    z[0][:, 2] = 5.0  # zero variance: standardised to 0, so C_22 = 0
    z = [t.requires_grad_(True) for t in z]
    terms = twinfold.create("loss", "barlow-twins").terms(z, z)
    ref = reference_terms(z[0].detach(), z[1].detach())
    torch.testing.assert_close(terms["loss"], ref["loss"])
    terms["loss"].backward()
    assert all(torch.isfinite(t.grad).all() for t in z)


def test_separate_target_averages_ordered_pairs() -> None:
    """online != target lists (e.g. with an EMA target): mean over (o_i, t_j), i != j."""
    o = _views(8, 5, 5)
    t = _views(8, 5, 6)
    loss = twinfold.create("loss", "barlow-twins")
    expected = (reference_terms(o[0], t[1])["loss"] + reference_terms(o[1], t[0])["loss"]) / 2
    torch.testing.assert_close(loss(o, t), expected)


def test_more_views_average_unordered_pairs() -> None:
    z = [*_views(8, 5, 7), _views(8, 5, 8)[0]]
    loss = twinfold.create("loss", "barlow-twins")
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(reference_terms(z[i], z[j])["loss"] for i, j in pairs) / 3
    torch.testing.assert_close(loss(z, z), expected)


def test_bad_inputs_are_named() -> None:
    loss = twinfold.create("loss", "barlow-twins")
    with pytest.raises(ValueError, match="equal-length"):
        loss([torch.randn(4, 3)], [torch.randn(4, 3)])
    with pytest.raises(ValueError, match="view 1"):
        loss([torch.randn(4, 3), torch.randn(4, 3)], [torch.randn(4, 3), torch.randn(4, 2)])
