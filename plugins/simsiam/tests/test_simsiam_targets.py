"""The stop-gradient target rule (Chen & He 2021, eq. 2 and Algorithm 1): no target
network, targets are the online projections detached, and no gradient reaches the
encoder or projector through the target side."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import twinfold
from twinfold.method import OnlineNetwork, SiameseMethod


def small_online(seed: int = 0) -> OnlineNetwork:
    torch.manual_seed(seed)
    encoder = twinfold.create("encoder", "small-cnn", widths=[4, 8])
    projector = twinfold.create(
        "head", "simsiam-projector", in_dim=8, hidden_dims=[16, 16], out_dim=6
    )
    predictor = twinfold.create("head", "simsiam-predictor", in_dim=6, hidden_dims=[3], out_dim=6)
    return OnlineNetwork(encoder, projector, predictor)


def _views(seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(
            5,
            3,
            12,
            12,
            generator=g,
        )
        for _ in range(2)
    ]


def _grads(online: OnlineNetwork) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in online.named_parameters()}


def test_no_target_module_and_targets_are_the_detached_projections() -> None:
    online = small_online()
    rule = twinfold.create("target", "stop-gradient")
    assert rule.build(online) is None
    out = online(_views())
    targets = rule.targets(_views(), out, None)
    for t, z in zip(targets, out.projections, strict=True):
        assert z.requires_grad and not t.requires_grad and t.grad_fn is None
        assert t.data_ptr() == z.data_ptr()  # a view of the same values, not a copy
        assert torch.equal(t, z)
    assert rule.update(online, None, 0, 10) == {} and rule.state_dict() == {}
    method = SiameseMethod(online, rule, twinfold.create("loss", "simsiam"))
    assert method.target is None


def test_gradient_is_the_stop_gradient_one_and_removing_the_detach_changes_it() -> None:
    views = _views()

    # 1. the method with SimSiam's rule
    online = small_online()
    method = SiameseMethod(
        online, twinfold.create("target", "stop-gradient"), twinfold.create("loss", "simsiam")
    )
    method.training_step(views).loss.backward()
    ours = _grads(online)

    # 2. an independent reference: eq. 2 written by hand with sg = detach
    ref_net = small_online()
    out = ref_net(views)
    (p1, p2), (z1, z2) = out.predictions, out.projections
    ref = -0.5 * (
        F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()
    )
    ref.backward()
    expected = _grads(ref_net)
    for name, g in ours.items():
        torch.testing.assert_close(g, expected[name], rtol=1e-4, atol=1e-6, msg=name)

    # 3. the same step WITHOUT the detach (rule "none" hands over the live projections)
    live_net = small_online()
    live = SiameseMethod(
        live_net, twinfold.create("target", "none"), twinfold.create("loss", "simsiam")
    )
    torch.testing.assert_close(live.training_step(views).loss, method.training_step(views).loss)
    live.training_step(views).loss.backward()
    without = _grads(live_net)
    for name, g in ours.items():
        if name.startswith("predictor."):
            # the predictor sees only the p side: identical either way
            torch.testing.assert_close(g, without[name], rtol=1e-4, atol=1e-6, msg=name)
    changed = [
        n
        for n in ours
        if not n.startswith("predictor.")
        and not torch.allclose(ours[n], without[n], rtol=1e-3, atol=1e-5)
    ]
    projector = [n for n in ours if n.startswith("projector.")]
    encoder = [n for n in ours if n.startswith("encoder.")]
    assert set(projector) <= set(changed), "the target side must carry no gradient"
    assert any(n in changed for n in encoder)


def test_projection_gradient_comes_only_from_the_predictor_side() -> None:
    """d L / d z_j with sg: only through p_j = h(z_j). Rebuilding the loss from the
    detached targets must leave the projections' gradient unchanged."""
    online = small_online()
    out = online(_views())
    for z in out.projections:
        z.retain_grad()
    rule = twinfold.create("target", "stop-gradient")
    targets = rule.targets(_views(), out, None)
    loss = twinfold.create("loss", "simsiam")(out.predictions, targets)
    grads_p = torch.autograd.grad(loss, out.predictions, retain_graph=True)
    loss.backward(retain_graph=True)
    total = [z.grad.clone() for z in out.projections]
    for g, z, p, gp in zip(total, out.projections, out.predictions, grads_p, strict=True):
        via_predictor = torch.autograd.grad(p, z, gp, retain_graph=True)[0]
        torch.testing.assert_close(g, via_predictor)
        assert via_predictor.abs().max() > 1e-4
