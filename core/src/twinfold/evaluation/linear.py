"""Linear evaluation on frozen features: multinomial logistic regression (softmax
cross-entropy plus an L2 penalty on the weights), trained full-batch with L-BFGS on
standardised features. Deterministic: no sampling, fixed initialisation at zero."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LinearProbeResult:
    top1: float  # held-out accuracy, 0..1
    train_top1: float
    iterations: int
    weight: Tensor  # [classes, dim], on standardised features
    bias: Tensor
    mean: Tensor  # the standardisation of the training features
    std: Tensor

    def probabilities(self, features: Tensor) -> Tensor:
        """Class probabilities of raw (unstandardised) ``features``."""
        x = (features.double() - self.mean) / self.std
        return torch.softmax(x @ self.weight.T + self.bias, dim=1)


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
    num_classes: int | None = None,
) -> LinearProbeResult:
    """Fit ``softmax(W x + b)`` on the training features, report top-1 on the test ones.

    The objective is ``mean CE + weight_decay / 2 * ||W||^2``; features are standardised
    with the training mean and standard deviation.
    """
    if train_features.shape[0] < 2:
        raise ValueError("the linear probe needs at least two training samples")
    if len(torch.unique(train_labels)) < 2:
        raise ValueError("the linear probe needs at least two classes in the training split")
    x = train_features.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    xt = (test_features.double() - mean) / std
    y, yt = train_labels.long(), test_labels.long()
    classes = num_classes or int(max(y.max(), yt.max())) + 1
    weight = torch.zeros(classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    iterations = int(opt.state[opt._params[0]].get("n_iter", 0))  # type: ignore[attr-defined]
    with torch.no_grad():
        train_acc = ((x @ weight.T + bias).argmax(1) == y).double().mean().item()
        test_acc = ((xt @ weight.T + bias).argmax(1) == yt).double().mean().item()
    return LinearProbeResult(
        test_acc, train_acc, iterations, weight.detach(), bias.detach(), mean, std
    )
