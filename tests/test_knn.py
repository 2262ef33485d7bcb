"""Weighted kNN (Wu et al. 2018) against a brute-force reference and sanity cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from twinfold.evaluation import knn_predict, knn_top1


def reference_knn(bank, labels, queries, k, t, classes):
    """Per query: the k most cosine-similar bank rows vote exp(sim / t) for their label."""
    out = []
    for q in queries:
        sims = torch.stack([F.cosine_similarity(q, b, dim=0) for b in bank])
        order = sorted(range(len(bank)), key=lambda i: -sims[i].item())[:k]
        votes = [0.0] * classes
        for i in order:
            votes[int(labels[i])] += float(torch.exp(sims[i] / t))
        out.append(max(range(classes), key=lambda c: votes[c]))
    return torch.tensor(out)


def test_matches_brute_force_reference() -> None:
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(60, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (60,), generator=g)
    queries = torch.randn(25, 8, generator=g, dtype=torch.float64)
    ours = knn_predict(bank, labels, queries, k=7, temperature=0.1, chunk_size=4)
    assert torch.equal(ours, reference_knn(bank, labels, queries, 7, 0.1, 4))


def test_separable_embeddings_give_100_and_shuffled_labels_near_chance() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(10, 32, generator=g) * 5
    labels = torch.arange(10).repeat_interleave(50)
    feats = centres[labels] + 0.1 * torch.randn(500, 32, generator=g)
    tl = torch.arange(10).repeat_interleave(20)
    test = centres[tl] + 0.1 * torch.randn(200, 32, generator=g)
    assert knn_top1(feats, labels, test, tl, k=20) == 1.0
    shuffled = labels[torch.randperm(500, generator=g)]
    assert knn_top1(feats, shuffled, test, tl, k=20) < 0.25


def test_k_larger_than_bank_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="k=30 is larger than the kNN memory bank \\(10"):
        knn_predict(torch.randn(10, 3), torch.zeros(10), torch.randn(2, 3), k=30)
