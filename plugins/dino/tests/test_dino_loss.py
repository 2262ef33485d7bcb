"""DINO's loss against an independent reference written from the paper's pseudo-code
(Caron et al. 2021, Algorithm 1, extended to multi-crop as in sec. 3.1): value, gradient,
centre update and the teacher-temperature warm-up."""

from __future__ import annotations

import pytest
import torch

import twinfold
from twinfold import StepProgress
from twinfold_dino import DINOLoss, DINOLossConfig, teacher_temperature

B, K = 6, 5


def reference(student, teacher, center, tps, tpt, m, globals_):
    """Algorithm 1: H(t, s) = -(softmax((t - C) / tpt) * log softmax(s / tps)).sum(1).mean(),
    summed over (global teacher view, any other student view) and averaged over those
    pairs; then C = m C + (1 - m) mean over the teacher outputs of the global views."""

    def h(t, s):
        t = t.detach()
        s = torch.softmax(s / tps, dim=1)
        t = torch.softmax((t - center) / tpt, dim=1)
        return -(t * torch.log(s)).sum(dim=1).mean()

    pairs = [(j, i) for j in range(globals_) for i in range(len(student)) if i != j]
    loss = sum(h(teacher[j], student[i]) for j, i in pairs) / len(pairs)
    new_center = m * center + (1 - m) * torch.cat(teacher[:globals_]).mean(dim=0)
    return loss, new_center


def _outputs(views: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, K, generator=g, dtype=torch.float64) for _ in range(views)]


@pytest.mark.parametrize("views", [2, 5])
def test_value_gradient_and_centre_match_the_pseudo_code(views: int) -> None:
    cfg = DINOLossConfig(out_dim=K, warmup_teacher_temp_epochs=0, teacher_temp=0.05)
    loss = DINOLoss(cfg).double()
    center = torch.randn(K, dtype=torch.float64)
    loss.center.copy_(center)
    student = [s.requires_grad_(True) for s in _outputs(views, 0)]
    teacher = _outputs(2, 1)
    terms = loss.terms(student, teacher)
    terms["loss"].backward()
    ref_student = [s.detach().clone().requires_grad_(True) for s in student]
    ref, ref_center = reference(ref_student, teacher, center, 0.1, 0.05, 0.9, 2)
    ref.backward()
    torch.testing.assert_close(terms["loss"], ref)
    for mine, theirs in zip(student, ref_student, strict=True):
        assert theirs.grad.abs().max() > 1e-4  # not a vacuous comparison
        torch.testing.assert_close(mine.grad, theirs.grad)
    torch.testing.assert_close(loss.center, ref_center)
    assert float(terms["teacher_temp"]) == pytest.approx(0.05)


def test_centre_is_updated_after_the_loss_and_changes_the_next_value() -> None:
    loss = DINOLoss(DINOLossConfig(out_dim=K)).double()
    student, teacher = _outputs(3, 2), _outputs(2, 3)
    first = loss(student, teacher)
    assert loss.center.abs().sum() > 0  # moved by the first call
    second = loss(student, teacher)
    assert not torch.equal(first, second)  # the second call used the new centre


def test_teacher_sees_only_the_global_views() -> None:
    loss = DINOLoss(DINOLossConfig(out_dim=K, global_views=2))
    assert loss.target_views(12) == 2 and loss.target_views(1) == 1
    with pytest.raises(ValueError, match="out_dim=5"):
        loss.terms([torch.randn(B, 7)] * 3, [torch.randn(B, 7)] * 2)
    with pytest.raises(ValueError, match="teacher views"):
        loss.terms([torch.randn(B, K)] * 2, [torch.randn(B, K)] * 3)


def test_teacher_temperature_warms_up_per_epoch_like_the_reference_code() -> None:
    # numpy.linspace(0.04, 0.07, 30) for the first 30 epochs, then 0.07
    expected = torch.linspace(0.04, 0.07, 30, dtype=torch.float64).tolist() + [0.07] * 5
    got = [teacher_temperature(e, 0.04, 0.07, 30) for e in range(35)]
    assert got == pytest.approx(expected, abs=1e-15)
    assert teacher_temperature(0, 0.04, 0.07, 1) == 0.04
    assert teacher_temperature(1, 0.04, 0.07, 1) == 0.07
    assert teacher_temperature(0, 0.04, 0.07, 0) == 0.07


def test_before_step_sets_the_temperature_and_it_is_in_the_state_dict() -> None:
    loss = twinfold.create("loss", "dino", out_dim=K, warmup_teacher_temp_epochs=3)
    assert float(loss.teacher_temp) == pytest.approx(0.04)
    loss.before_step(StepProgress(step=25, epoch=2, steps_per_epoch=10, total_steps=50))
    assert float(loss.teacher_temp) == pytest.approx(0.07)
    loss.before_step(StepProgress(step=15, epoch=1, steps_per_epoch=10, total_steps=50))
    assert float(loss.teacher_temp) == pytest.approx(0.055)
    loss.terms(_outputs(3, 4), _outputs(2, 5))
    state = loss.state_dict()
    assert set(state) == {"center", "teacher_temp"}
    fresh = twinfold.create("loss", "dino", out_dim=K, warmup_teacher_temp_epochs=3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.center, loss.center)
    assert float(fresh.teacher_temp) == float(loss.teacher_temp)


def test_config_bounds() -> None:
    with pytest.raises(twinfold.ConfigError, match="student_temp"):
        twinfold.load_config({"preset": "dino-small", "method": {"loss": {"student_temp": 0}}})
