"""DirectPred's predictor against an independent NumPy reference written from the paper's
equations (Tian, Chen & Ganguli 2021, Eqs. 18 and 19): its value, its gradient, when F and
W_p change (once per step, every ``freq`` steps), resuming from its state, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from twinfold_directpred import DirectPredConfig, DirectPredictor, directpred_weight

DIM, BATCH, VIEWS = 6, 16, 2


def reference_weight(corr: np.ndarray, eps: float) -> np.ndarray:
    """Eq. 18 in NumPy: U diag(sqrt(s_j) / max_j sqrt(s_j) + eps) U^T."""
    s, u = np.linalg.eigh(corr)
    root = np.sqrt(np.clip(s, 0.0, None))
    return u @ np.diag(root / root.max() + eps) @ u.T


def reference_run(
    steps: list[list[np.ndarray]], w0: np.ndarray, rho: float, eps: float, freq: int
) -> list[np.ndarray]:
    """The W_p that each step uses: F <- rho F + (1 - rho) E_B[f f^T] after every step
    (Eq. 19; the first step's E_B[f f^T] initialises F), E_B over all views of the step;
    W_p <- Eq. 18 after steps 0, freq, 2 freq, ..."""
    used, w, corr = [], w0, None
    for k, views in enumerate(steps):
        used.append(w)
        f = np.concatenate(views)
        batch_corr = f.T @ f / len(f)
        corr = batch_corr if corr is None else rho * corr + (1 - rho) * batch_corr
        if k % freq == 0:
            w = reference_weight(corr, eps)
    return used


def make_steps(n: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(DIM, DIM))  # correlated, anisotropic features
    return [[rng.normal(size=(BATCH, DIM)) @ mix for _ in range(VIEWS)] for _ in range(n)]


def head(**params: float) -> DirectPredictor:
    torch.manual_seed(0)
    return DirectPredictor(DirectPredConfig(in_dim=DIM, **params)).double()


def train_step(module: DirectPredictor, views: list[np.ndarray], seed: int):
    """One step as the siamese method runs it: the predictor once per view, then one
    backward pass of a loss that depends on every output."""
    inputs = [torch.tensor(v, requires_grad=True) for v in views]
    outputs = [module(f) for f in inputs]
    g = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outputs]
    sum((o * u).sum() for o, u in zip(outputs, upstream)).backward()
    return inputs, outputs, upstream


@pytest.mark.parametrize(("rho", "eps", "freq"), [(0.3, 0.01, 1), (0.5, 0.1, 2)])
def test_value_and_gradient_match_the_paper_equations(rho: float, eps: float, freq: int) -> None:
    steps = make_steps(5)
    module = head(rho=rho, eps=eps, freq=freq)
    expected = reference_run(steps, module.weight.numpy().copy(), rho, eps, freq)
    for k, views in enumerate(steps):
        inputs, outputs, upstream = train_step(module, views, seed=k)
        w = expected[k]
        for f, out, u, x in zip(views, outputs, upstream, inputs):
            np.testing.assert_allclose(out.detach().numpy(), f @ w.T, rtol=1e-9, atol=1e-9)
            # d/df sum(u * (f W^T)) = u W: the gradient flows through W_p to f only
            np.testing.assert_allclose(x.grad.numpy(), u.numpy() @ w, rtol=1e-9, atol=1e-9)
    assert list(module.parameters()) == []  # W_p is set, never learned


def test_weight_spectrum_is_the_square_root_of_f_normalised_plus_eps() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, DIM)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.0])
    corr = a.T @ a / 40
    w = directpred_weight(torch.tensor(corr), eps=0.1).numpy()
    np.testing.assert_allclose(w, w.T, atol=1e-12)
    s = np.sort(np.linalg.eigvalsh(corr))
    p = np.sort(np.linalg.eigvalsh(w))
    np.testing.assert_allclose(p, np.sqrt(np.clip(s, 0, None)) / np.sqrt(s.max()) + 0.1, atol=1e-9)
    assert p.max() == pytest.approx(1.1) and p.min() == pytest.approx(0.1, abs=1e-6)
    # a collapsed batch (F = 0) gives eps * I instead of a division by zero
    zero = directpred_weight(torch.zeros(DIM, DIM, dtype=torch.float64), eps=0.1)
    np.testing.assert_allclose(zero.numpy(), 0.1 * np.eye(DIM))


def test_statistics_only_in_training_with_gradients() -> None:
    module = head()
    w0 = module.weight.clone()
    f = torch.randn(BATCH, DIM, dtype=torch.float64)
    module(f)  # input without gradient (a frozen / no-grad forward): nothing recorded
    module.eval()
    module(f.requires_grad_()).sum().backward()
    module.train()
    assert int(module.pending_count) == 0 and not bool(module.stepped)
    train_step(module, [f.detach().numpy()] * VIEWS, seed=0)
    assert int(module.pending_count) == VIEWS * BATCH and bool(module.stepped)
    assert torch.equal(module.weight, w0)  # W_p changes at the next step, not mid-step
    train_step(module, [f.detach().numpy()] * VIEWS, seed=1)
    assert int(module.steps) == 1 and not torch.equal(module.weight, w0)


def test_state_dict_resumes_exactly() -> None:
    steps = make_steps(4, seed=3)
    straight = head()
    for k, views in enumerate(steps):
        _, outputs, _ = train_step(straight, views, seed=k)
    first = head()
    for k, views in enumerate(steps[:2]):
        train_step(first, views, seed=k)
    resumed = DirectPredictor(DirectPredConfig(in_dim=DIM)).double()
    resumed.load_state_dict(first.state_dict())  # mid-run: step 2's statistics pending
    for k, views in enumerate(steps[2:], start=2):
        _, again, _ = train_step(resumed, views, seed=k)
    for a, b in zip(outputs, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(resumed.corr, straight.corr, rtol=0, atol=0)


def test_bad_input_names_the_culprit() -> None:
    with pytest.raises(ValueError, match="needs in_dim"):
        DirectPredictor(DirectPredConfig())
    with pytest.raises(ValueError, match=r"expects \[batch, 6\] inputs, got \(4, 5\)"):
        head()(torch.randn(4, 5, dtype=torch.float64))
    with pytest.raises(ValidationError, match="rho"):
        DirectPredConfig(rho=1.0)
    with pytest.raises(ValidationError, match="freq"):
        DirectPredConfig(freq=0)
