"""Graph-free labels and the endpoint label check of the pruning rule."""

import pytest
import torch

from kces.graph import Identity
from kces.labels import feature_class_scores, is_identity_like, label_disagreement


def star_problem():
    """Training nodes 0, 1, 2 hold classes 0, 1, 2 with orthogonal features; node 3 looks like
    class 0 first and class 1 second; it is linked to every training node."""
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0.5, 0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 2, -1])
    train = torch.tensor([0, 1, 2])
    pairs = torch.tensor([[0, 1, 2, 0], [3, 3, 3, 1]])
    return x, y, train, pairs


def test_feature_scores_rank_classes_by_feature_similarity():
    x, y, train, _ = star_problem()
    scores = feature_class_scores(x, y, train, 3)
    assert scores[3].argsort(descending=True).tolist() == [0, 1, 2]
    # the training nodes are fitted to their own class
    assert scores[:3].argmax(1).tolist() == [0, 1, 2]


@pytest.mark.parametrize("top_k, expected", [(1, [False, True, True, True]), (2, [False, False, True, True])])
def test_disagreement_counts_top_k_feature_classes_as_compatible(top_k, expected):
    x, y, train, pairs = star_problem()
    assert label_disagreement(pairs, x, y, train, 3, top_k=top_k).tolist() == expected


def test_featureless_graphs_have_no_label_check():
    x = torch.eye(4)
    assert is_identity_like(x) and not is_identity_like(torch.ones(4, 4))
    y = torch.tensor([0, 1, 1, 0])
    pairs = torch.tensor([[0, 0, 1, 2], [1, 3, 2, 3]])
    train = torch.tensor([0, 1, 2])
    assert label_disagreement(pairs, x, y, train, 2) is None
    assert label_disagreement(pairs, Identity(4, torch.float32, torch.device("cpu")), y, train, 2) is None
    assert label_disagreement(pairs, x + 0.5, y, train, 2) is not None


def test_neighbourhood_scores_against_a_loop():
    """Own scores plus the mean scores of the unlabelled neighbours; labelled neighbours do not vote."""
    from kces.labels import neighbourhood_scores

    g = torch.Generator().manual_seed(0)
    n, c = 7, 3
    pairs = torch.tensor([[0, 0, 1, 2, 3, 4], [1, 2, 2, 3, 5, 5]])
    scores = torch.rand(n, c, generator=g, dtype=torch.float64)
    labelled = torch.tensor([True, False, False, True, False, False, False])
    got = neighbourhood_scores(pairs, scores, labelled)
    for v in range(n):
        voters = [int(w) for a, b in pairs.T.tolist() for w, t in ((a, b), (b, a)) if t == v and not labelled[w]]
        expected = scores[v] + (scores[voters].mean(0) if voters else 0)
        torch.testing.assert_close(got[v], expected)


def test_neighbourhood_label_source_changes_the_check():
    """A node whose features point to class 1 but whose unlabelled neighbours all look like
    class 0 gets class 0 from the neighbourhood: its edge to a class-1 training node disagrees."""
    x = torch.tensor([[0.4, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([1, 0, 0, 0, 1])
    train = torch.tensor([1, 4])
    pairs = torch.tensor([[0, 0, 0], [2, 3, 4]])  # node 0: two class-0-like neighbours and a class-1 training node
    by_features = label_disagreement(pairs, x, y, train, 2, top_k=1)
    by_neighbourhood = label_disagreement(pairs, x, y, train, 2, top_k=1, source="neighbourhood")
    assert not by_features[2] and by_neighbourhood[2]  # the edge 0 – 4 (training node of class 1)
