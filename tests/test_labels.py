"""Graph-free labels and the endpoint label check of the pruning rule."""

import pytest
import torch

from kces.graph import Identity
from kces.labels import (feature_class_scores, is_identity_like, label_disagreement, neighbourhood_overlap,
                         smoothed_features, training_neighbour_excess)


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


def test_neighbourhood_overlap_against_sets():
    """Overlap coefficient of the endpoints' neighbour sets (each without the other endpoint),
    against Python sets on random graphs; 1 where an endpoint has no other neighbour."""
    g = torch.Generator().manual_seed(0)
    for n, m in ((6, 7), (20, 60), (40, 30)):
        pairs = torch.unique(torch.randint(0, n, (2, 3 * m), generator=g).sort(0).values, dim=1)
        pairs = pairs[:, pairs[0] != pairs[1]][:, :m]
        neighbours = {v: set() for v in range(n)}
        for a, b in pairs.T.tolist():
            neighbours[a].add(b)
            neighbours[b].add(a)
        expected = []
        for a, b in pairs.T.tolist():
            others = min(len(neighbours[a] - {b}), len(neighbours[b] - {a}))
            expected.append(len(neighbours[a] & neighbours[b]) / others if others else 1.0)
        assert 0.0 in expected and 1.0 in expected
        assert neighbourhood_overlap(pairs, n).tolist() == pytest.approx(expected, rel=1e-6)
    assert neighbourhood_overlap(torch.zeros(2, 0, dtype=torch.long), 3).shape == (0,)


def test_featureless_graphs_check_neighbourhood_overlap():
    """Without features an edge disagrees when its endpoints share (almost) none of their other
    neighbours, whatever their labels: two triangles 0–1–2 and 3–4–5 joined by the edge 2–3."""
    x = torch.eye(6)
    assert is_identity_like(x) and not is_identity_like(torch.ones(6, 6))
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    pairs = torch.tensor([[0, 1, 2, 0, 3, 4, 3], [1, 2, 3, 2, 4, 5, 5]])
    train = torch.tensor([0, 3])
    assert neighbourhood_overlap(pairs, 6).tolist() == [1, 1, 0, 1, 1, 1, 1]
    expected = [False, False, True, False, False, False, False]
    assert label_disagreement(pairs, x, y, train, 2).tolist() == expected
    assert label_disagreement(pairs, Identity(6, torch.float32, torch.device("cpu")), y, train, 2).tolist() == expected
    with_features = torch.tensor([[1.0, 0.1]] * 3 + [[0.1, 1.0]] * 3)
    assert label_disagreement(pairs, with_features, y, train, 2).tolist() == expected  # here: by the labels
    assert not label_disagreement(pairs, with_features, torch.tensor([0, 0, 0, 0, 1, 1]), torch.tensor([0, 3]),
                                  2)[2]  # labels agree across the bridge: kept, whatever the overlap


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


def excess_reference(pairs, y, train, num_classes, z):
    """training_neighbour_excess with Python loops and sets."""
    n, train = len(y), set(train.tolist())
    neighbours = {v: set() for v in range(n)}
    for a, b in pairs.T.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    attacker = {}
    for v in range(n):
        counts = [sum(1 for w in neighbours[v] if w in train and y[w] == c) for c in range(num_classes)]
        expected = sum(1 for w in neighbours[v] if w not in train) * len(train) / (n - len(train))
        spread = (expected + 1) ** 0.5
        excess = sum(counts) - expected
        accounts = [c for c in range(num_classes) if counts[c] >= excess - spread]
        if excess > z * spread and len(accounts) == 1 and not (v in train and y[v] == accounts[0]):
            attacker[v] = accounts[0]
    return [any(a in train and attacker.get(b) == y[a] for a, b in ((u, v), (v, u))) for u, v in pairs.T.tolist()]


@pytest.mark.parametrize("z", [0.5, 2.0])
def test_training_neighbour_excess_against_a_loop(z):
    g = torch.Generator().manual_seed(1)
    for n, m, c in ((30, 40, 2), (60, 120, 3), (90, 150, 4)):
        y = torch.randint(0, c, (n,), generator=g)
        train = torch.randperm(n, generator=g)[: n // 3]
        # random edges, then every training node of a random class linked to each of 3 random nodes
        sources = [train[y[train] == torch.randint(0, c, (), generator=g)] for _ in range(3)]
        targets = torch.randint(0, n, (3,), generator=g)
        planted = [torch.stack([s, torch.full_like(s, int(v))]) for s, v in zip(sources, targets)]
        pairs = torch.cat([torch.randint(0, n, (2, 3 * m), generator=g), *planted], dim=1).sort(0).values
        pairs = torch.unique(pairs[:, pairs[0] != pairs[1]], dim=1)
        got = training_neighbour_excess(pairs, y, train, c, z)
        expected = excess_reference(pairs, y, train, c, z)
        assert got.tolist() == expected
        assert any(expected) and not all(expected)


def test_training_neighbour_excess_flags_the_class_that_piles_up():
    """Node 0 (unlabelled) has 8 unlabelled neighbours and 2 training neighbours of class 0 (its
    own, as expected: 10 training nodes of 40); then 8 training nodes of class 1 link to it: only
    their edges are flagged. Had 2 of class 1 linked (no excess), nothing would be."""
    y = torch.tensor([0] * 20 + [1] * 20)
    train = torch.tensor([1, 2] + list(range(30, 38)))  # 1, 2: class 0; 30..37: class 1
    base = [(0, v) for v in range(3, 11)] + [(0, 1), (0, 2)]
    attack = [(0, v) for v in range(30, 38)]
    pairs = torch.tensor(base + attack).T
    flagged = training_neighbour_excess(pairs, y, train, 2)
    assert flagged.tolist() == [False] * len(base) + [True] * len(attack)
    few = torch.tensor(base + attack[:2]).T
    assert not training_neighbour_excess(few, y, train, 2).any()
    assert training_neighbour_excess(torch.zeros(2, 0, dtype=torch.long), y, train, 2).shape == (0,)


def test_featureless_disagreement_joins_overlap_and_excess():
    """On a featureless graph an edge disagrees when either check flags it; the planted pile-up
    (every class-1 training node linked to node 0) is caught by the excess check."""
    g = torch.Generator().manual_seed(3)
    n = 60
    y = torch.randint(0, 2, (n,), generator=g)
    train = torch.randperm(n, generator=g)[:15]
    sources = train[(y[train] == 1) & (train != 0)]
    planted = torch.stack([sources, torch.zeros_like(sources)])
    pairs = torch.cat([torch.randint(0, n, (2, 120), generator=g), planted], 1)
    pairs = torch.unique(pairs.sort(0).values[:, pairs[0] != pairs[1]], dim=1)
    excess = training_neighbour_excess(pairs, y, train, 2)
    overlap = neighbourhood_overlap(pairs, n) <= 0.3
    got = label_disagreement(pairs, torch.eye(n), y, train, 2)
    assert got.tolist() == (overlap | excess).tolist() and (excess & ~overlap).any()


def test_label_disagreement_with_precomputed_scores():
    """Given its feature scores, the check is the same; given other scores, it follows them, and
    never reads ``x`` (an Identity would otherwise mean the featureless check)."""
    x = torch.tensor([[0.4, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([1, 0, 0, 0, 1])
    train = torch.tensor([1, 4])
    pairs = torch.tensor([[0, 0, 0, 2], [2, 3, 4, 3]])
    scores = feature_class_scores(x, y, train, 2)
    for source in ("features", "neighbourhood"):
        expected = label_disagreement(pairs, x, y, train, 2, source=source)
        assert label_disagreement(pairs, x, y, train, 2, source=source, scores=scores).tolist() == expected.tolist()
    assert label_disagreement(pairs, x, y, train, 2).tolist() == [True, True, False, False]  # node 0: class 1
    scores[0] = scores[0].flip(0)  # node 0 now looks like class 0
    assert label_disagreement(pairs, x, y, train, 2, scores=scores).tolist() == [False, False, True, False]
    featureless = Identity(5, torch.float32, torch.device("cpu"))
    assert label_disagreement(pairs, featureless, y, train, 2, scores=scores).tolist() == [False, False, True, False]


def test_both_label_sources_flag_what_either_flags():
    """``"both"``: the union of the feature check and the neighbourhood check, on random graphs."""
    g = torch.Generator().manual_seed(1)
    n, c = 30, 3
    x = torch.rand(n, 8, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    train = torch.arange(0, n, 3)
    upper = torch.triu(torch.rand(n, n, generator=g) < 0.2, diagonal=1).nonzero().T
    by = {source: label_disagreement(upper, x, y, train, c, source=source)
          for source in ("features", "neighbourhood", "both")}
    assert torch.equal(by["both"], by["features"] | by["neighbourhood"])
    assert not torch.equal(by["features"], by["neighbourhood"])  # the union is not one of them


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k, hops", [(1, 1), (3, 2), (5, 3)])
def test_smoothed_features_against_a_dense_loop(seed, k, hops):
    """``hops`` products with ``D^-1/2 (A + I) D^-1/2`` of the symmetric k-nearest-cosine graph,
    built one node at a time (cosines in float64 rounded to float32, ties by index, positive only)."""
    g = torch.Generator().manual_seed(seed)
    n = 25
    x = (torch.rand(n, 8, generator=g) < 0.35).double() * torch.rand(n, 8, generator=g, dtype=torch.float64)
    x[torch.arange(n), torch.arange(n) % 8] += 1.0
    unit = x / x.norm(dim=1, keepdim=True)
    adj = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        cosine = (unit @ unit[i]).float()
        others = sorted((j for j in range(n) if j != i), key=lambda j: (-cosine[j].item(), j))[:k]
        for j in others:
            if cosine[j] > 0:
                adj[i, j] = adj[j, i] = 1.0
    norm = adj.sum(1).rsqrt()
    expected = x
    for _ in range(hops):
        expected = (norm[:, None] * adj * norm[None]) @ expected
    got = smoothed_features(x, k, hops)
    assert got.dtype == torch.float64 and torch.allclose(got, expected, atol=1e-12)
    assert smoothed_features(x.float(), k, hops).dtype == torch.float32


def test_feature_class_scores_read_the_smoothed_features():
    """``neighbours`` > 0: the regression on :func:`smoothed_features`; it moves a node whose own
    features point to one class while its feature neighbours hold another."""
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 1.0], [0, 0.9, 1.0], [0, 1.0, 0.9], [0.6, 0.5, 1.0]],
                     dtype=torch.float64)  # node 5: class 0 by its own features, its nearest nodes class 1
    y, train = torch.tensor([0, 1, -1, -1, -1, -1]), torch.tensor([0, 1])
    smoothed = feature_class_scores(x, y, train, 2, neighbours=3)
    assert torch.allclose(smoothed, feature_class_scores(smoothed_features(x, 3), y, train, 2))
    assert torch.equal(feature_class_scores(x, y, train, 2, neighbours=0), feature_class_scores(x, y, train, 2))
    assert feature_class_scores(x, y, train, 2)[5].argmax() == 0
    assert smoothed.argmax(1).tolist() == [0, 1, 1, 1, 1, 1]
