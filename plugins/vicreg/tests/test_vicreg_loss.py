"""The VICReg loss against an independent float64 reference written from eqs. 1-6 of
Bardes et al. 2022 (value and gradient), the two variance conventions, the view-pair
rules and the config."""

from __future__ import annotations

import pydantic
import pytest
import torch

import twinfold
from twinfold_vicreg import VICRegLoss, VICRegLossConfig

SHAPES = [(8, 4), (5, 16), (32, 3), (2, 7)]


def ref_v(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Eqs. 1-2: the hinge on the per-dimension std; variance unbiased, by explicit loops."""
    n, d = z.shape
    total = torch.zeros((), dtype=torch.float64)
    for j in range(d):
        col = z[:, j]
        mean = col.sum() / n
        var = ((col - mean) ** 2).sum() / (n - 1)
        total = total + torch.clamp(gamma - torch.sqrt(var + eps), min=0)
    return total / d


def ref_c(z: torch.Tensor) -> torch.Tensor:
    """Eqs. 3-4: (1/d) sum of squared off-diagonal entries of the unbiased covariance."""
    d = z.shape[1]
    cov = torch.cov(z.T)  # rows are variables; unbiased (n - 1)
    off = cov * (1 - torch.eye(d, dtype=z.dtype))
    return (off**2).sum() / d


def ref_s(z: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    """Eq. 5 in the authors' code form: the mean of the squared differences of all
    n x d entries (the paper's per-sample squared norm divided by d)."""
    n, d = z.shape
    return sum(((z[i] - zp[i]) ** 2).sum() for i in range(n)) / (n * d)


def ref_loss(
    z: torch.Tensor,
    zp: torch.Tensor,
    lam: float = 25.0,
    mu: float = 25.0,
    nu: float = 1.0,
    convention: str = "code",
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """Eq. 6; 'code' halves the sum of the two variance terms, 'paper' does not."""
    v = ref_v(z, gamma, eps) + ref_v(zp, gamma, eps)
    if convention == "code":
        v = v / 2
    return lam * ref_s(z, zp) + mu * v + nu * (ref_c(z) + ref_c(zp))


def pair(n: int, d: int, seed: int = 0, scale: float = 0.5) -> list[torch.Tensor]:
    """Two correlated views, scaled so that the variance hinge is active in some dims."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    widths = torch.linspace(0.2, 2.0, d, dtype=torch.float64)
    return [
        (base + scale * torch.randn(n, d, generator=g, dtype=torch.float64)) * widths + 1,
        (base - scale * torch.randn(n, d, generator=g, dtype=torch.float64)) * widths,
    ]


@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("convention", ["code", "paper"])
def test_value_and_gradient_match_reference(n: int, d: int, convention: str) -> None:
    z = [t.clone().requires_grad_(True) for t in pair(n, d, seed=n * d)]
    loss = twinfold.create("loss", "vicreg", variance_convention=convention)
    ours = loss(z, z)  # same tensors on both sides: target rule 'none'
    zr = [t.detach().clone().requires_grad_(True) for t in z]
    ref = ref_loss(zr[0], zr[1], convention=convention)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.backward()
    ref.backward()
    for a, b in zip(z, zr, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert zr[0].grad.abs().max() > 1e-3


@pytest.mark.parametrize("n,d", SHAPES[:2])
def test_custom_coefficients_gamma_and_eps(n: int, d: int) -> None:
    z = pair(n, d, seed=3)
    params = dict(sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5, gamma=1.5, eps=1e-2)
    loss = twinfold.create("loss", "vicreg", **params)
    expected = ref_loss(z[0], z[1], lam=2.0, mu=3.0, nu=0.5, gamma=1.5, eps=1e-2)
    torch.testing.assert_close(loss(z, z), expected, rtol=1e-12, atol=1e-12)


def test_terms_are_the_unweighted_parts_of_the_total() -> None:
    z = pair(16, 6, seed=5)
    terms = twinfold.create("loss", "vicreg").terms(z, z)
    assert set(terms) == {"loss", "invariance", "variance", "covariance"}
    torch.testing.assert_close(terms["invariance"], ref_s(*z))
    torch.testing.assert_close(terms["variance"], (ref_v(z[0]) + ref_v(z[1])) / 2)
    torch.testing.assert_close(terms["covariance"], ref_c(z[0]) + ref_c(z[1]))
    weighted = 25 * terms["invariance"] + 25 * terms["variance"] + terms["covariance"]
    torch.testing.assert_close(terms["loss"], weighted)
    assert all(not t.requires_grad for k, t in terms.items() if k != "loss")


@pytest.mark.parametrize("n,d", SHAPES)
def test_paper_and_code_conventions_differ_by_half_the_variance_term(n: int, d: int) -> None:
    z = pair(n, d, seed=11)
    code = twinfold.create("loss", "vicreg")  # the default is the authors' code
    paper = twinfold.create("loss", "vicreg", variance_convention="paper")
    assert code.cfg.variance_convention == "code"
    v = ref_v(z[0]) + ref_v(z[1])
    assert v > 0.05  # the hinge is active, so the comparison is not vacuous
    torch.testing.assert_close(paper(z, z) - code(z, z), 25.0 * v / 2)
    torch.testing.assert_close(paper.terms(z, z)["variance"], 2 * code.terms(z, z)["variance"])


def test_known_values() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 5, generator=g, dtype=torch.float64) * 10
    terms = twinfold.create("loss", "vicreg").terms([z, z + 1], [z, z + 1])
    assert terms["invariance"].item() == pytest.approx(1.0)  # every entry differs by 1
    assert terms["variance"].item() == 0.0  # every std is far above gamma = 1
    # identical, constant embeddings: zero std everywhere -> v = 1 - sqrt(eps) per view
    flat = torch.ones(4, 3, dtype=torch.float64)
    terms = twinfold.create("loss", "vicreg").terms([flat, flat], [flat, flat])
    assert terms["variance"].item() == pytest.approx(1 - 1e-2)
    assert terms["covariance"].item() == 0.0 and terms["invariance"].item() == 0.0


def test_separate_target_averages_the_ordered_pairs() -> None:
    """VICReg's loss with a target branch (e.g. BYOL's EMA target and a predictor):
    the mean over (online i, target j), i != j."""
    p = pair(12, 5, seed=1)
    t = pair(12, 5, seed=2)
    ours = twinfold.create("loss", "vicreg")(p, t)
    expected = (ref_loss(p[0], t[1]) + ref_loss(p[1], t[0])) / 2
    torch.testing.assert_close(ours, expected)


def test_same_tensors_compute_the_pair_once_and_three_views_average() -> None:
    z = pair(10, 4, seed=7)
    loss = twinfold.create("loss", "vicreg")
    torch.testing.assert_close(loss(z, z), ref_loss(z[0], z[1]))
    third = z[0] * 0.3 - z[1]
    views = [z[0], z[1], third]
    expected = (ref_loss(z[0], z[1]) + ref_loss(z[0], third) + ref_loss(z[1], third)) / 3
    torch.testing.assert_close(loss(views, views), expected)


def test_bad_inputs_are_named() -> None:
    loss = twinfold.create("loss", "vicreg")
    with pytest.raises(ValueError, match="equal-length"):
        loss([torch.randn(4, 3)], [torch.randn(4, 3)])
    with pytest.raises(ValueError, match="view 1"):
        loss([torch.randn(4, 3), torch.randn(4, 3)], [torch.randn(4, 3), torch.randn(4, 2)])
    one = [torch.randn(1, 3), torch.randn(1, 3)]
    with pytest.raises(ValueError, match="at least 2 samples"):
        loss(one, one)


def test_config_fields_and_validation() -> None:
    cfg = VICRegLossConfig()
    assert (cfg.sim_coeff, cfg.std_coeff, cfg.cov_coeff) == (25.0, 25.0, 1.0)
    assert (cfg.eps, cfg.gamma, cfg.variance_convention) == (1e-4, 1.0, "code")
    assert "variance_convention" in (VICRegLossConfig.__doc__ or "")
    with pytest.raises(pydantic.ValidationError, match="variance_convention"):
        VICRegLossConfig(variance_convention="both")
    with pytest.raises(pydantic.ValidationError, match="extra"):
        VICRegLossConfig(lambda_=1.0)
    assert isinstance(twinfold.create("loss", "vicreg"), VICRegLoss)
    again = VICRegLossConfig.model_validate(VICRegLossConfig(eps=1e-3).model_dump())
    assert again == VICRegLossConfig(eps=1e-3)
