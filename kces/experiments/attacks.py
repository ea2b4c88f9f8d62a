"""Attacked graphs: the published Pro-GNN ones, and live attacks cached on disk.

``meta`` and ``nettack`` are the pre-perturbed Pro-GNN graphs (the same graph for every seed;
Nettack's rate is perturbations per target node and it is scored on its target nodes).
``dice``, ``random``, ``prbcd``, ``grbcd``, ``trainlink``, ``trainhub`` (``-capped``,
``-padded``) and ``metaself`` run live on the clean graph with a budget of ``round(rate · m)`` edge flips (m:
undirected edges), seeded by the cell's seed, and are cached as ``scipy.sparse.save_npz`` files
keyed by (dataset, attack, rate, seed; without the seed for the deterministic ones of
:data:`~.names.SEEDLESS`). The ``-adaptive`` attacks are given the cell's defence chain and
attack through it; they are cached per defence too. Rate 0 is the clean graph for every attack.
"""
from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import InputError
from ..formats import atomic_write, read_sparse_npz
from ..labels import EXCESS_Z, expected_training_neighbours, feature_class_scores
from .datasets import Dataset, Graph, index_mask, load_graph
from .metagradient import META_STEPS, SelfTraining, meta_self
from .metrics import accuracy_on
from .models import EPOCHS, EdgeScale, seed_everything, train_pyg
from .names import ADAPTIVE, LIVE, PREPERTURBED, SEEDLESS

RBCD_BLOCK_SIZE = 100_000
"""Candidate edges PRBCD/GRBCD consider at a time (sampled with replacement, then deduplicated)."""
RBCD_EPOCHS = 50
"""Attack steps of PRBCD (the last 10 on a fixed block) and GRBCD: Cora at 5% in about 5 s on one core."""


def budget(graph: Graph, rate: float) -> int:
    """``round(rate · m)`` edge flips, m the undirected edges of the clean graph."""
    return int(round(rate * (sp.triu(graph.clean_adj, k=1).nnz)))


def edge_keys(adj: sp.spmatrix) -> set[int]:
    """The undirected edges of the symmetric ``adj`` (n, n) as keys ``i · n + j``, i < j."""
    upper = sp.triu(adj, k=1).tocoo()
    return set((upper.row.astype(np.int64) * adj.shape[0] + upper.col).tolist())


def random_insertion(graph: Graph, rate: float, seed: int, epochs: int) -> sp.csr_matrix:
    """Insert ``round(rate · m)`` new undirected edges, uniformly among the non-edges, seeded
    (DeepRobust's ``Random(type='add')`` with a private generator)."""
    adj, n, count = graph.adj, graph.num_nodes, budget(graph, rate)
    taken = edge_keys(adj)
    if count > n * (n - 1) // 2 - len(taken):
        raise InputError(f"cannot insert {count} edges: the graph has fewer non-edges")
    rng = np.random.default_rng(seed)
    new: list[int] = []
    while len(new) < count:
        pairs = np.sort(rng.integers(0, n, size=(count, 2)), axis=1)
        for i, j in pairs[pairs[:, 0] < pairs[:, 1]].tolist():
            if len(new) < count and i * n + j not in taken:
                taken.add(i * n + j)
                new.append(i * n + j)
    return with_insertions(adj, np.asarray(new, dtype=np.int64))


def with_insertions(adj: sp.csr_matrix, keys: np.ndarray) -> sp.csr_matrix:
    """``adj`` (n, n) plus the undirected edges ``keys`` (k,) int64, each ``i · n + j``, i < j."""
    rows, cols = np.divmod(keys, adj.shape[0])
    inserted = sp.coo_matrix((np.ones(2 * rows.size, dtype=np.float32),
                              (np.concatenate([rows, cols]), np.concatenate([cols, rows]))), shape=adj.shape)
    return (adj + inserted).tocsr()


ADAPTIVE_ROUNDS = 10
"""Rounds of the adaptive attack: propose, run the defence, replace what it pruned."""


def train_links(graph: Graph, rate: float, seed: int,
                defend: Callable[[sp.csr_matrix], sp.csr_matrix] | None = None) -> sp.csr_matrix:
    """Insert ``round(rate · m)`` edges, each from a training node to a node of another class —
    Metattack's habit (its insertions land on the labelled nodes it trains against) without its
    gradient. The attacker knows every label.

    With ``defend`` (the cell's defence chain, adjacency in → adjacency out) the attack is
    *adaptive*: for :data:`ADAPTIVE_ROUNDS` rounds it runs the defence on its own poisoned graph,
    withdraws the insertions the defence pruned (never proposing them again) and refills the
    budget, preferring what survived: a surviving edge from a training node of class c to v
    makes (c, v) a combination to reuse with other training nodes of class c (a rule that
    judges an edge by the classes of its endpoints lets all of them through). The last round's
    proposals stay. Without ``defend``, one round of uniform proposals. Seeded; the budget is
    spent exactly; the input is not modified."""
    adj, n, count = graph.adj, graph.num_nodes, budget(graph, rate)
    labels, train = graph.labels, graph.idx_train
    rng = np.random.default_rng(seed)
    existing = edge_keys(adj)
    other = [np.flatnonzero((labels != c) & (labels >= 0)) for c in range(int(labels.max()) + 1)]
    train_of = [train[labels[train] == c] for c in range(int(labels.max()) + 1)]
    chosen: dict[int, None] = {}  # insertion order kept: deterministic
    rejected: set[int] = set()
    safe: dict[tuple[int, int], None] = {}  # (class of the training end, other end) that survived

    def propose(missing: int, exploit: float) -> None:
        combos = list(safe)
        for _ in range(100 * missing + 1000):
            if missing == 0:
                return
            if combos and rng.random() < exploit:
                c, v = combos[rng.integers(len(combos))]
                u = int(train_of[c][rng.integers(train_of[c].size)])
            else:
                u = int(train[rng.integers(train.size)])
                v = int(other[labels[u]][rng.integers(other[labels[u]].size)])
            key = min(u, v) * n + max(u, v)
            if u != v and key not in existing and key not in chosen and key not in rejected:
                chosen[key] = None
                missing -= 1
        raise InputError(f"cannot place {count} training-node insertions in {graph.name}")

    def poisoned() -> sp.csr_matrix:
        return with_insertions(adj, np.fromiter(chosen, dtype=np.int64, count=len(chosen)))

    labelled = graph.train_mask
    rounds = 1 if defend is None else ADAPTIVE_ROUNDS
    for round_ in range(rounds):
        propose(count - len(chosen), exploit=0.0 if round_ == 0 else 0.8)
        if round_ == rounds - 1:
            break
        kept = sp.csr_matrix(defend(poisoned()))
        for key in list(chosen):
            u, v = divmod(key, n)
            if kept[u, v] == 0:
                del chosen[key]
                rejected.add(key)
            else:
                safe.update(((int(labels[a]), b), None) for a, b in ((u, v), (v, u)) if labelled[a])
    return poisoned()


VOTE_SAMPLE = 60
"""Unlabelled nodes of other classes :func:`vote_links` weighs for each training node's insertion."""
VOTE_HELPERS = 3
"""Helper edges :func:`vote_links` spends at most to move one node's neighbourhood vote."""
VOTE_HELPER_POOL = 300
"""Unlabelled nodes per class that may serve as helpers: those with that feature label, strongest first."""


def vote_links(graph: Graph, rate: float, seed: int, defend: Callable[[sp.csr_matrix], sp.csr_matrix] | None = None,
               avoid: PairFilter | None = None, epochs: int = EPOCHS, scale: EdgeScale | None = None,
               anchor: sp.spmatrix | None = None, targets: np.ndarray | None = None,
               scores: np.ndarray | None = None) -> sp.csr_matrix:
    """Training-node insertions that first move the neighbourhood vote: the ``trainlink`` family,
    aimed at KCES's neighbourhood label check (:func:`kces.labels.neighbourhood_scores`; part of
    the default), which labels an unlabelled node u by its feature class scores plus the mean of
    its unlabelled neighbours' and prunes an edge from a class-c training node to u when that
    label is not c.

    The attacker knows every label and the rule. The training nodes take turns (in index order);
    for each (class c), among :data:`VOTE_SAMPLE` random nodes u of ``targets`` (default: the
    test nodes) of another class (seeded) not linked to it and never targeted before, it picks the
    one that needs the fewest *helper* edges — from u to unlabelled nodes whose feature label is
    c, strongest first, never a node targeted before, at most :data:`VOTE_HELPERS` — for u's vote
    (on the graph poisoned so far) to become c, and among those the one whose inserted edges weigh most in its
    aggregation (the least degree plus weight of the defence's ``anchor`` edges at u), inserts
    those and the training-node edge, and goes on until the budget is spent or a whole round of
    training nodes finds no such node within what is left. What is left then goes to insertions
    between two unlabelled nodes of different classes, picked at random (seeded), never at a
    target that holds its link (whose vote they could undo) nor a pair in ``avoid`` (the pairs
    the defence always prunes or down-weights, :func:`~.defences.always_pruned`; None: none): the
    label check never inspects them.

    With ``defend`` (the cell's defence chain, adjacency in → adjacency out) it attacks through the
    defence: for up to :data:`ADAPTIVE_ROUNDS` rounds it runs the defence on its own poisoned graph,
    withdraws every training-node edge the defence pruned together with its helpers (never
    targeting that node again) and every other insertion it pruned (never proposed again), and
    spends the freed budget the same way; the last round's insertions stay. It does so twice,
    the second time targeting only nodes whose own feature label is c (what a rule that also
    checks feature labels, ``label_source="both"``, accepts), and keeps the run whose defended
    graph leaves a fresh surrogate of its own (a GCN trained for ``epochs`` on what the defence
    keeps, with the weights ``scale`` and the anchors ``anchor`` it gives) less accurate on the
    ``targets``, as :func:`prbcd_through_defence` does (the first on a tie). Against a defence that
    rebuilds the graph (SVD) it is the attack without ``defend``. Exactly ``round(rate · m)``
    insertions; seeded; the input is not modified. ``scores``: the (n, C) feature class scores the
    defence's label check reads (:func:`~.defences.always_labelled`), default the plain ones
    (:func:`kces.labels.feature_class_scores`). Raises ``ValueError`` on a featureless graph (no
    feature label to aim at)."""
    labels, labelled, train = graph.labels, graph.train_mask, graph.idx_train
    if scores is None:
        scores = feature_class_scores(torch.from_numpy(graph.features.toarray()), torch.from_numpy(labels),
                                      torch.from_numpy(train), int(labels.max()) + 1).numpy()
    if not scores[~labelled].any():
        raise InputError(f"the vote-moving attack needs node features; {graph.name}'s give no class scores "
                         "(identity features?)")
    helpers = {c: [int(h) for h in np.argsort(-scores[:, c], kind="stable")
                   if not labelled[h] and scores[h].argmax() == c][:VOTE_HELPER_POOL]
               for c in range(scores.shape[1])}
    feature_label = scores.argmax(1)
    count = budget(graph, rate)
    free = np.flatnonzero(~labelled & (labels >= 0))  # the unlabelled nodes the fillers join
    anchored = np.zeros(graph.num_nodes) if anchor is None else np.asarray(sp.csr_matrix(anchor).sum(1)).ravel()
    targets = graph.idx_test if targets is None else np.asarray(targets)
    aimed = index_mask(targets, graph.num_nodes)

    def attempt(lookalikes: bool) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
        """(poisoned adjacency, the edges the defence keeps of it, None without a defence that
        removes edges) of one run; ``lookalikes``: only targets whose own feature label is the
        training node's class."""
        adj = sp.lil_matrix(graph.adj, dtype=np.float32)
        rng = np.random.default_rng(seed)
        targeted = np.zeros(graph.num_nodes, dtype=bool)  # never targeted again, nor used as a helper
        links: dict[tuple[int, int], list[int]] = {}  # (training node, target) → its helpers, in insertion order
        fillers: dict[tuple[int, int], None] = {}  # (u, v), u < v: the other insertions, in insertion order
        rejected: set[tuple[int, int]] = set()  # fillers the defence pruned

        def label(u: int, extra: list[int]) -> int:
            voters = [v for v in adj.rows[u] if not labelled[v]] + extra
            return int((scores[u] + (scores[voters].mean(0) if voters else 0)).argmax())

        def place(left: int) -> int:
            """Insert links and their helpers within ``left`` edges; the edges spent."""
            spent, turn, misses = 0, 0, 0
            while spent < left and misses < train.size:  # stop after a round without a link
                t = int(train[turn % train.size])
                c, turn = labels[t], turn + 1
                pool = aimed & ~targeted & (labels != c)
                pool = np.flatnonzero(pool & (feature_label == c) if lookalikes else pool)
                if pool.size == 0:
                    misses += 1
                    continue
                best = None
                for u in rng.choice(pool, min(VOTE_SAMPLE, pool.size), replace=False).tolist():
                    if adj[t, u]:
                        continue
                    extra: list[int] = []
                    for h in helpers[c]:
                        if label(u, extra) == c or len(extra) == VOTE_HELPERS:
                            break
                        if h != u and not targeted[h] and not adj[u, h]:
                            extra.append(h)
                    key = (len(extra), len(adj.rows[u]) + anchored[u])  # helpers, then what dilutes a link
                    if label(u, extra) == c and (best is None or key < best[2]):
                        best = (u, extra, key)
                if best is None or spent + 1 + len(best[1]) > left:
                    misses += 1
                    continue
                misses = 0
                u, extra, _ = best
                for v in [*extra, t]:
                    adj[u, v] = adj[v, u] = 1
                targeted[u] = True
                links[(t, u)] = extra
                spent += 1 + len(extra)
            return spent

        def fill(left: int) -> None:
            """Insert ``left`` edges between unlabelled nodes of different classes, none at a target
            that holds its link."""
            won = index_mask([u for _, u in links], graph.num_nodes)
            for _ in range(100):
                if left == 0:
                    return
                pairs = np.sort(rng.choice(free, (4 * left + 64, 2)), axis=1)
                pairs = pairs[(labels[pairs[:, 0]] != labels[pairs[:, 1]]) & ~won[pairs].any(1)]
                if avoid is not None:
                    pairs = pairs[~avoid(torch.from_numpy(pairs.T.astype(np.int64))).numpy()]
                for u, v in pairs.tolist():
                    if left and not adj[u, v] and (u, v) not in rejected:
                        adj[u, v] = adj[v, u] = 1
                        fillers[(u, v)] = None
                        left -= 1
            raise InputError(f"cannot place {count} insertions in {graph.name}")

        spent = place(count)
        fill(count - spent)
        kept = None
        for round_ in range(ADAPTIVE_ROUNDS if defend is not None else 0):
            kept = kept_edges(defend, sp.csr_matrix(adj))
            pruned = [] if kept is None else [link for link in links if kept[link] == 0]
            lost = [] if kept is None else [pair for pair in fillers if kept[pair] == 0]
            if not (pruned or lost) or round_ == ADAPTIVE_ROUNDS - 1:
                break
            for t, u in pruned:
                extra = links.pop((t, u))
                for v in [*extra, t]:
                    adj[u, v] = adj[v, u] = 0
                spent -= 1 + len(extra)
            for u, v in lost:
                del fillers[(u, v)]
                rejected.add((u, v))
                adj[u, v] = adj[v, u] = 0
            spent += place(count - spent - len(fillers))
            fill(count - spent - len(fillers))
        out = sp.csr_matrix(adj)
        out.eliminate_zeros()
        return out, kept  # the last round's defence ran on the graph returned

    runs = [attempt(lookalikes=False)]
    if runs[0][1] is None:
        return runs[0][0]
    runs.append(attempt(lookalikes=True))
    accuracy = [_surrogate_accuracy(graph.with_adj(kept), seed, epochs, targets, scale, anchor)
                for _, kept in runs]
    return runs[int(np.argmin(accuracy))][0]


EVASIONS = ("cap", "pad")


def train_hubs(graph: Graph, rate: float, seed: int, epochs: int, evade: str | None = None) -> sp.csr_matrix:
    """Insert ``round(rate · m)`` edges from training nodes to the best-connected nodes of other
    classes: the training nodes take turns (in index order), each linking to the highest-degree
    node of another class it is not linked to yet (ties by index). The hubs of a community link
    to each other, so a training node's new neighbours share neighbours with each other: a
    rule-aware attack on a check that trusts edges whose endpoints share neighbours (KCES on
    featureless graphs, :func:`kces.labels.neighbourhood_overlap`).

    ``evade`` makes it aware of KCES's training-neighbour excess check too
    (:func:`kces.labels.training_neighbour_excess`): a node takes an insertion only while its
    training neighbours stay within the bound the check allows (excess at most
    :data:`~kces.labels.EXCESS_Z` standard deviations). ``"cap"``: a node at the bound is
    skipped, so the attack spreads from the hubs down the degree order. ``"pad"``: an unlabelled
    node at the bound is first linked to unlabelled nodes of the attacking class (highest degree
    first), which raises the count its other neighbours predict, until the insertion fits. What
    the bound leaves of the budget links unlabelled nodes of different classes, hubs first
    (edges KCES does not inspect). Deterministic (``seed`` and ``epochs`` unused); the input is
    not modified."""
    if evade not in (None, *EVASIONS):
        raise InputError(f"evade must be None or one of {EVASIONS}, got {evade!r}")
    adj, n, count = graph.adj, graph.num_nodes, budget(graph, rate)
    labels, train = graph.labels, graph.idx_train
    linked = sp.csr_matrix(adj != 0)
    degree = np.asarray(linked.sum(1)).ravel()
    by_degree = np.argsort(-degree, kind="stable")
    classes = set(labels[train].tolist())
    hubs_against = {c: by_degree[(labels[by_degree] != c) & (labels[by_degree] >= 0)] for c in classes}
    labelled = graph.train_mask
    inside = np.asarray(linked[:, labelled].sum(1)).ravel()  # training neighbours
    outside = degree - inside

    def fits(v: int) -> bool:  # can v take one more training neighbour unflagged?
        expected, spread = expected_training_neighbours(outside[v], train.size, n)
        return evade is None or EXCESS_Z * spread + expected - inside[v] >= 1

    unlabelled_of = {c: [v for v in by_degree.tolist() if labels[v] == c and not labelled[v]] for c in classes}
    padded = np.zeros(n, dtype=np.int64)  # how far down unlabelled_of[c] each node's padding went
    existing, chosen = edge_keys(adj), []

    def link(a: int, b: int) -> bool:
        key = min(a, b) * n + max(a, b)
        if a == b or key in existing:
            return False
        existing.add(key)
        chosen.append(key)
        return True

    position = np.zeros(train.size, dtype=np.int64)
    while len(chosen) < count:
        placed = len(chosen)
        for i, u in enumerate(train.tolist()):
            c = int(labels[u])
            targets = hubs_against[c]
            while position[i] < targets.size and len(chosen) < count:
                v = int(targets[position[i]])
                position[i] += 1
                if min(u, v) * n + max(u, v) in existing:
                    continue
                while evade == "pad" and not labelled[v] and not fits(v) and len(chosen) < count - 1 \
                        and padded[v] < len(unlabelled_of[c]):
                    w = unlabelled_of[c][padded[v]]
                    padded[v] += 1
                    if link(v, w):
                        outside[v] += 1
                        outside[w] += 1
                if fits(v) and (fits(u) or not labelled[v]) and link(u, v):
                    inside[v] += 1
                    inside[u] += labelled[v]
                    break
        if len(chosen) == placed:
            if evade is not None:
                break
            raise InputError(f"cannot place {count} training-node insertions in {graph.name}")
    unlabelled = [v for v in by_degree.tolist() if not labelled[v] and labels[v] >= 0]
    across = ((v, w) for i, v in enumerate(unlabelled) for w in unlabelled[i + 1:] if labels[v] != labels[w])
    for v, w in across:  # the bound reached everywhere: link unlabelled hubs of different classes
        if len(chosen) == count:
            break
        link(v, w)
    return with_insertions(adj, np.asarray(chosen, dtype=np.int64))


def dice(graph: Graph, rate: float, seed: int, epochs: int) -> sp.csr_matrix:
    """DICE (:func:`dice_attack`) on the graph's adjacency."""
    return dice_attack(graph.adj, graph.labels, rate, seed)


def dice_attack(adj: sp.spmatrix, labels: np.ndarray, rate: float, seed: int) -> sp.csr_matrix:
    """DICE ("delete internally, connect externally"): ``round(rate * m)`` random edits, each
    removing an intra-class edge or inserting an inter-class non-edge with probability 1/2
    (DeepRobust ``DICE``), seeded. Deletions are capped by the intra-class edges there are.
    ``labels`` (n,) int; raises ``ValueError`` if the insertions cannot be placed."""
    rng = np.random.default_rng(seed)
    adj = sp.lil_matrix(adj, dtype=np.float32)
    n = adj.shape[0]
    upper = sp.triu(sp.csr_matrix(adj), k=1).tocoo()
    intra = np.flatnonzero(labels[upper.row] == labels[upper.col])
    budget = int(round(rate * upper.nnz))
    n_remove = min(int(rng.binomial(budget, 0.5)), intra.size)
    n_insert = budget - n_remove
    inter_pairs = (n * n - np.square(np.bincount(labels)).sum()) // 2
    if n_insert > inter_pairs - (upper.nnz - intra.size):
        raise InputError(f"DICE cannot insert {n_insert} inter-class edges: too few inter-class non-edges")
    for k in rng.choice(intra, size=n_remove, replace=False):
        adj[upper.row[k], upper.col[k]] = adj[upper.col[k], upper.row[k]] = 0
    added = 0
    while added < n_insert:
        i, j = rng.integers(0, n, size=2)
        if labels[i] != labels[j] and adj[i, j] == 0:
            adj[i, j] = adj[j, i] = 1
            added += 1
    out = adj.tocsr()
    out.eliminate_zeros()
    return out


PairFilter = Callable[[torch.Tensor], torch.Tensor]
"""(2, b) int64 node pairs → (b,) bool, True for the pairs to leave alone."""


def rbcd_perturbed(graph: Graph, count: int, seed: int, epochs: int, greedy: bool = False,
                    avoid: PairFilter | None = None, targets: np.ndarray | None = None,
                    edge_scale: EdgeScale | None = None, anchor: sp.spmatrix | None = None) -> sp.csr_matrix:
    """``graph.adj`` after PyG's PRBCD/GRBCD with ``count`` flips against a PyG GCN (Adam,
    ``epochs``) trained on ``graph.adj``, attacking the predictions of ``targets`` (default: the
    test nodes). PRBCD with ``avoid`` drops the pairs it flags from every block of candidate pairs
    it samples, so it never flips them. With ``edge_scale`` (a defence's graph-free re-weighting)
    and ``anchor`` (edges a defence adds, graph-free: (n, n) symmetric, weighted) the surrogate is
    trained on, and the attack differentiates through, the graph so re-weighted and joined."""
    with warnings.catch_warnings():  # "contrib contains experimental code"
        warnings.simplefilter("ignore", UserWarning)
        from torch_geometric.contrib.nn import GRBCDAttack, PRBCDAttack

    class AvoidingPRBCD(PRBCDAttack):
        def _sample_random_block(self, budget: int = 0) -> None:
            super()._sample_random_block(budget)
            self._drop_avoided()

        def _resample_random_block(self, budget: int) -> None:
            super()._resample_random_block(budget)
            self._drop_avoided()

        def _drop_avoided(self) -> None:
            keep = ~avoid(self.block_edge_index.cpu()).to(self.device)
            self.current_block, self.block_edge_index = self.current_block[keep], self.block_edge_index[:, keep]
            self.block_edge_weight = self.block_edge_weight[keep]

    if greedy and avoid is not None:
        raise InputError("avoid is for PRBCD; GRBCD does not sample blocks of pairs")
    seed_everything(seed)
    surrogate, x, (edge_index,) = train_pyg(graph, "gcn", "adam", epochs, edge_scale=edge_scale, anchor=anchor)
    cls = GRBCDAttack if greedy else PRBCDAttack if avoid is None else AvoidingPRBCD
    rbcd = cls(surrogate, block_size=RBCD_BLOCK_SIZE, epochs=RBCD_EPOCHS, log=False,
               **({} if greedy else {"epochs_resampling": RBCD_EPOCHS - 10}))
    perturbed, _ = rbcd.attack(x, edge_index, torch.from_numpy(graph.labels), count,
                               idx_attack=torch.from_numpy(graph.idx_test if targets is None else targets))
    row, col = perturbed.numpy()
    return sp.csr_matrix((np.ones(row.size, dtype=np.float32), (row, col)), shape=graph.adj.shape)


def _rbcd(greedy: bool) -> Callable[[Graph, float, int, int], sp.csr_matrix]:
    def attack(graph: Graph, rate: float, seed: int, epochs: int) -> sp.csr_matrix:
        """PyG's PRBCD/GRBCD against a PyG GCN (Adam, ``epochs``) trained on the clean graph,
        attacking the test nodes' predictions (evasion; the perturbed graph is then used for
        training too, as a poisoning transfer)."""
        return rbcd_perturbed(graph, budget(graph, rate), seed, epochs, greedy)
    return attack


GRADIENT_ROUNDS = 3
"""Rounds of the adaptive gradient attacks: sanitize, attack what the defence keeps, withdraw."""

SeenAttack = Callable[[Graph, int, int, sp.csr_matrix], sp.csr_matrix]
"""(graph as the defence leaves it, flips to spend, round, pairs to leave alone as a 0/1 (n, n)
matrix) → that graph's adjacency after the attack."""


def kept_edges(defend: Callable[[sp.csr_matrix], sp.csr_matrix], adj: sp.csr_matrix,
               full_weight: bool = False) -> sp.csr_matrix | None:
    """The edges (0/1) the defence keeps of ``adj`` when its output holds no others (it removes
    edges, and may re-weight some it keeps), else None: a defence that rebuilds the graph (SVD's
    dense reconstruction) gives the attacker no edge to withdraw and no sparse graph to attack.
    ``full_weight``: only those it keeps at their weight in ``adj`` (one it down-weights counts as
    undone, like one it prunes)."""
    out = sp.csr_matrix(defend(adj))
    kept = (out != 0).astype(np.float32)
    if (kept - kept.multiply(adj != 0)).nnz:
        return None
    if not full_weight:
        return kept
    edges = sp.coo_matrix(adj)
    same = np.isclose(np.asarray(out[edges.row, edges.col]).ravel(), edges.data)
    return sp.csr_matrix((np.ones(int(same.sum()), dtype=np.float32), (edges.row[same], edges.col[same])),
                         shape=adj.shape)


def through_defence(graph: Graph, rate: float, defend: Callable[[sp.csr_matrix], sp.csr_matrix],
                    attack: SeenAttack) -> sp.csr_matrix:
    """A gradient attack run through the whole pipeline, with the defence in the loop.

    Each of :data:`GRADIENT_ROUNDS` rounds runs the defence on the current poisoned graph and
    spends the remaining budget with ``attack`` on what the defence keeps (the graph the victim
    trains on); flips the defence undoes on the next poisoned graph (an inserted edge it prunes or
    down-weights) are withdrawn and their budget spent again in the next round, and the attack is
    told to leave them, and the edges the defence removes, alone. At most ``round(rate · m)`` flips
    relative to the clean graph. Against a defence that rebuilds the graph (SVD) it
    is the plain attack on the poisoned graph."""
    clean, count = graph.adj, budget(graph, rate)
    poisoned = clean.copy()
    withdrawn = sp.csr_matrix(clean.shape, dtype=np.float32)
    for round_ in range(GRADIENT_ROUNDS):
        flips = (poisoned != clean).nnz // 2
        if count > flips:
            kept = kept_edges(defend, poisoned)
            seen = poisoned if kept is None else kept
            blocked = ((withdrawn + poisoned - seen) > 0).astype(np.float32)
            attacked = attack(graph.with_adj(seen), count - flips, round_, blocked)
            # the insertions into the seen graph, less edges the poisoned graph already holds
            # (ones the defence pruned: re-inserting them costs nothing and changes nothing), and deletions
            added = sp.triu(attacked - attacked.multiply(poisoned), k=1)
            removed = sp.triu(seen - seen.multiply(attacked), k=1)
            change = added - removed
            poisoned = sp.csr_matrix(poisoned + change + change.T)
            poisoned.eliminate_zeros()
        kept = kept_edges(defend, poisoned, full_weight=True) if round_ < GRADIENT_ROUNDS - 1 else None
        pruned = None
        if kept is not None:  # withdraw the insertions the defence prunes or down-weights; spend their budget again
            pruned = sp.triu(poisoned - poisoned.multiply(kept), k=1).multiply(poisoned - clean > 0)
            poisoned = sp.csr_matrix(poisoned - pruned - pruned.T)
            poisoned.eliminate_zeros()
            withdrawn = withdrawn + pruned + pruned.T
        if (pruned is None or pruned.nnz == 0) and (poisoned != clean).nnz // 2 == count:
            break  # budget spent and nothing withdrawn: the later rounds would only re-run the defence
    return poisoned


RESTART_SEED = 1000
"""Added to the seed of the second PRBCD run against a defence with no pair rule
(:func:`prbcd_through_defence`)."""


def prbcd_through_defence(graph: Graph, rate: float, seed: int, epochs: int,
                          defend: Callable[[sp.csr_matrix], sp.csr_matrix],
                          avoid: PairFilter | None = None, targets: np.ndarray | None = None,
                          scale: EdgeScale | None = None, anchor: sp.spmatrix | None = None) -> sp.csr_matrix:
    """PRBCD (:func:`rbcd_perturbed`, surrogate trained on what the defence keeps, aimed at
    ``targets``, default the test nodes) through the defence (:func:`through_defence`), run twice;
    the attacker keeps the poisoned graph whose defended version (the poisoned graph itself if
    the defence rebuilds the graph, :func:`kept_edges`) leaves a fresh surrogate less accurate on
    the targets.

    Given ``avoid`` (the pairs the defence prunes or down-weights wherever they are,
    :func:`~kces.experiments.defences.always_pruned`), the second run never flips those nor a pair
    the defence pruned in an earlier round (avoiding them narrows PRBCD's search, which is not
    always better); without, it is the same attack under another seed (``+``
    :data:`RESTART_SEED`), so that every defence faces the same number of attempts. Given
    ``scale`` (the weights a re-weighting defence gives pairs wherever they are,
    :func:`~kces.experiments.defences.always_scaled`), the surrogates see those weights and a
    third run differentiates through them, avoiding only what the defence prunes. Given ``anchor``
    (edges the defence adds to what it keeps, graph-free), every surrogate sees them too."""
    n = graph.num_nodes
    targets = graph.idx_test if targets is None else targets

    def blind(seen: Graph, left: int, round_: int, blocked: sp.csr_matrix) -> sp.csr_matrix:
        return rbcd_perturbed(seen, left, seed + round_, epochs, targets=targets, anchor=anchor)

    def restart(seen: Graph, left: int, round_: int, blocked: sp.csr_matrix) -> sp.csr_matrix:
        return rbcd_perturbed(seen, left, seed + RESTART_SEED + round_, epochs, targets=targets, anchor=anchor)

    def aware(seen: Graph, left: int, round_: int, blocked: sp.csr_matrix) -> sp.csr_matrix:
        done = torch.tensor(sorted(edge_keys(blocked)), dtype=torch.int64)
        return rbcd_perturbed(seen, left, seed + round_, epochs, targets=targets, anchor=anchor, avoid=lambda pairs: (
            torch.isin(pairs.min(0).values * n + pairs.max(0).values, done) | avoid(pairs)))

    def weighted(seen: Graph, left: int, round_: int, blocked: sp.csr_matrix) -> sp.csr_matrix:
        done = torch.tensor(sorted(edge_keys(blocked)), dtype=torch.int64)

        def pruned(pairs: torch.Tensor) -> torch.Tensor:  # what ``avoid`` flags but the defence only down-weights
            weight = scale(pairs)
            flagged = weight == 0 if avoid is None else avoid(pairs) & ((weight == 0) | (weight == 1))
            return torch.isin(pairs.min(0).values * n + pairs.max(0).values, done) | flagged
        return rbcd_perturbed(seen, left, seed + round_, epochs, targets=targets, avoid=pruned, edge_scale=scale,
                              anchor=anchor)

    def accuracy_after_defence(adj: sp.csr_matrix) -> float:  # the surrogate's, on what the victim trains on
        kept = kept_edges(defend, adj)
        return _surrogate_accuracy(graph.with_adj(adj if kept is None else kept), seed, epochs, targets, scale,
                                   anchor)

    attacks = [blind, restart if avoid is None else aware] + ([] if scale is None else [weighted])
    poisoned = [through_defence(graph, rate, defend, attack) for attack in attacks]
    return poisoned[int(np.argmin([accuracy_after_defence(adj) for adj in poisoned]))]


def _surrogate_accuracy(graph: Graph, seed: int, epochs: int, nodes: np.ndarray,
                        scale: EdgeScale | None = None, anchor: sp.spmatrix | None = None) -> float:
    """Accuracy on ``nodes`` of the attacker's surrogate (PyG GCN, Adam, ``epochs``) trained on
    ``graph`` (its edges re-weighted by ``scale``, joined by ``anchor``)."""
    seed_everything(seed)
    model, x, inputs = train_pyg(graph, "gcn", "adam", epochs, edge_scale=scale, anchor=anchor)
    with torch.no_grad():
        return accuracy_on(model(x, *inputs), graph.labels, nodes)


def meta_self_attack(graph: Graph, rate: float, seed: int, epochs: int) -> sp.csr_matrix:
    """Meta-Self (:func:`kces.experiments.metagradient.meta_self`), ``round(rate · m)`` flips;
    deterministic, so the seed and epochs are unused."""
    objective = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.clean_adj)
    return meta_self(graph.adj, objective, budget(graph, rate))


def meta_self_through_defence(graph: Graph, rate: float, seed: int, epochs: int,
                              defend: Callable[[sp.csr_matrix], sp.csr_matrix],
                              avoid: PairFilter | None = None, anchor: sp.spmatrix | None = None) -> sp.csr_matrix:
    """Meta-Self through the defence (:func:`through_defence`), the best of its strategies.

    Each round's meta-gradient is taken on what the defence keeps, never proposes a pair the
    defence pruned, and flips as many pairs per step as the non-adaptive attack. The attacker
    runs this over all pairs and only among pairs of two unlabelled nodes (where a defence that
    inspects the training nodes' edges does not look); given ``avoid`` (the pairs the defence
    prunes wherever they are, :func:`~kces.experiments.defences.always_pruned`), the second
    strategy also leaves those alone and a third runs over all pairs but those. It keeps the
    poisoned graph whose defended version gives its own surrogate the highest Meta-Self loss
    (no test label is used). ``anchor``: edges the defence adds to what it keeps, graph-free
    ((n, n) symmetric weights; :class:`~kces.experiments.metagradient.SelfTraining` sees them)."""
    objective = SelfTraining(graph.features, graph.labels, graph.idx_train, graph.clean_adj, anchor=anchor)
    per_step = math.ceil(budget(graph, rate) / META_STEPS)
    unlabelled = ~graph.train_mask
    everywhere = np.ones((graph.num_nodes,) * 2, dtype=bool)
    strategies = [everywhere, unlabelled[:, None] & unlabelled[None, :]]
    if avoid is not None:
        kept = ~pair_matrix(avoid, graph.num_nodes)
        strategies = [everywhere, strategies[1] & kept, kept]
    poisoned = []
    for allowed in strategies:
        def attack(seen: Graph, left: int, round_: int, blocked: sp.csr_matrix,
                   allowed: np.ndarray = allowed) -> sp.csr_matrix:
            return meta_self(seen.adj, objective, left, allowed & (blocked.toarray() == 0), per_step)
        poisoned.append(through_defence(graph, rate, defend, attack))
    return poisoned[int(np.argmax([objective.value(defend(adj)) for adj in poisoned]))]


def pair_matrix(pairs_filter: PairFilter, n: int, chunk: int = 1 << 18) -> np.ndarray:
    """(n, n) bool, symmetric: ``pairs_filter`` of every pair of distinct nodes of an ``n``-node
    graph, asked ``chunk`` pairs at a time; False on the diagonal."""
    rows, cols = np.triu_indices(n, k=1)
    out = np.zeros((n, n), dtype=bool)
    for start in range(0, rows.size, chunk):
        i, j = rows[start:start + chunk], cols[start:start + chunk]
        out[i, j] = pairs_filter(torch.from_numpy(np.stack([i, j]).astype(np.int64))).numpy()
    return out | out.T


LIVE_ATTACKS: dict[str, Callable[[Graph, float, int, int], sp.csr_matrix]] = {
    "dice": dice, "random": random_insertion, "prbcd": _rbcd(greedy=False), "grbcd": _rbcd(greedy=True),
    "trainlink": lambda graph, rate, seed, epochs: train_links(graph, rate, seed), "trainhub": train_hubs,
    "trainhub-capped": lambda graph, rate, seed, epochs: train_hubs(graph, rate, seed, epochs, evade="cap"),
    "trainhub-padded": lambda graph, rate, seed, epochs: train_hubs(graph, rate, seed, epochs, evade="pad"),
    "metaself": meta_self_attack}
"""name → attack(clean graph, rate, seed, surrogate epochs) → (n, n) attacked adjacency."""
@dataclasses.dataclass(frozen=True)
class Told:
    """What an adaptive attacker is told of the defence chain it attacks
    (:func:`~kces.experiments.defences.tell`): ``defend`` the chain, (n, n) adjacency → what it
    keeps (up to the anchors it joins); ``avoid`` the pairs it always prunes or down-weights, or
    None; ``scale`` the weights it always gives pairs, or None; ``anchor`` the (n, n) anchors it
    joins, or None; ``scores`` the (n, C) feature class scores its label check reads when they are
    not the plain ones, or None."""

    defend: Callable[[sp.csr_matrix], sp.csr_matrix]
    avoid: PairFilter | None = None
    scale: EdgeScale | None = None
    anchor: sp.spmatrix | None = None
    scores: np.ndarray | None = None


ADAPTIVE_ATTACKS: dict[str, Callable[[Graph, float, int, int, Told], sp.csr_matrix]] = {
    "trainlink-adaptive": lambda graph, rate, seed, epochs, told: train_links(graph, rate, seed, told.defend),
    "votelink-adaptive": lambda graph, rate, seed, epochs, told: vote_links(
        graph, rate, seed, told.defend, told.avoid, epochs, told.scale, told.anchor, scores=told.scores),
    "prbcd-adaptive": lambda graph, rate, seed, epochs, told: prbcd_through_defence(
        graph, rate, seed, epochs, told.defend, told.avoid, scale=told.scale, anchor=told.anchor),
    "metaself-adaptive": lambda graph, rate, seed, epochs, told: meta_self_through_defence(
        graph, rate, seed, epochs, told.defend, told.avoid, anchor=told.anchor)}
"""name → attack(clean graph, rate, seed, surrogate epochs, what it is told of the cell's defence)
→ (n, n) attacked adjacency; each is the adaptive version of the live attack
:data:`~.names.ADAPTIVE_OF` names. PRBCD and Meta-Self are told which pairs the defence always
prunes or down-weights (the vote-moving attack too, for what it spends between unlabelled nodes),
PRBCD also the weights (Meta-Self's surrogate takes none), and both surrogates see the anchors;
the training-node attacks find the targets the label check accepts themselves (the vote-moving one
knowing how the neighbourhood labels are voted, by the class scores it is told; they decide by
what the defence prunes, which anchors joined after it do not change), and the vote-moving one
picks between its two runs by a surrogate that sees the weights and anchors."""


ATTACK_VERSIONS: dict[str, int] = {
    "dice": 1, "random": 1, "prbcd": 1, "grbcd": 1, "trainlink": 1, "trainhub": 1, "trainhub-capped": 1,
    "trainhub-padded": 1, "metaself": 1, "trainlink-adaptive": 1, "votelink-adaptive": 5, "prbcd-adaptive": 1,
    "metaself-adaptive": 1}
"""live or adaptive attack → version of the graphs it makes, part of their cache key: raise it with
every change that alters them, so that no graph an earlier version cached is read as this one's."""


class AttackedGraphs:
    """Attacked graphs for the cells: pre-perturbed ones read once and kept, live ones computed
    once and cached as ``{cache}/{dataset key}_{attack}_v{version}_{rate}_{seed}.npz``
    (:data:`ATTACK_VERSIONS`; adaptive ones with ``_{defence}``: the key of the edge stages they
    attacked, :func:`~kces.experiments.defences.edge_stages_key`)."""

    def __init__(self, cache: Path, epochs: int, root: str | os.PathLike | None = None):
        self.cache, self.epochs, self.root = cache, epochs, root
        self._preperturbed: dict[tuple[str, str, float], Graph] = {}

    def key(self, dataset: Dataset, attack: str, rate: float, seed: int, defence: str = "none") -> str:
        """File name stem of this attacked graph: the version only for computed (live and adaptive)
        attacks, the seed only for those that use it, ``defence``, the key of the attacked edge
        stages, only for adaptive ones."""
        if attack not in LIVE + ADAPTIVE:
            return f"{dataset.key}_{attack}_{rate:g}"
        stem = f"{dataset.key}_{attack}_v{ATTACK_VERSIONS[attack]}_{rate:g}"
        if attack not in SEEDLESS:
            stem = f"{stem}_{seed}"
        return f"{stem}_{defence}" if attack in ADAPTIVE else stem

    def path(self, dataset: Dataset, attack: str, rate: float, seed: int, defence: str = "none") -> Path:
        """Where the computed attacked graph is cached (:meth:`key`)."""
        return self.cache / f"{self.key(dataset, attack, rate, seed, defence)}.npz"

    def get(self, dataset: Dataset, attack: str, rate: float, seed: int, defence: str = "none",
            told: Told | None = None) -> Graph:
        """The attacked graph (``clean_adj`` the clean one; Nettack's ``target_nodes`` set).
        Pre-perturbed graphs are loaded on the first call, so calling this for every
        (dataset, pre-perturbed attack, rate) first checks that their files exist. An adaptive
        attack attacks the edge stages whose key is ``defence``, knowing what ``told`` tells of
        them (needed only when its graph is not cached)."""
        if attack in PREPERTURBED:
            return self._load_preperturbed(dataset, attack, rate)
        if rate == 0:
            return dataset.graph
        path = self.path(dataset, attack, rate, seed, defence)
        if path.is_file():
            adj = read_sparse_npz(path)
            if adj.shape != dataset.graph.adj.shape:
                raise InputError(f"cached graph {path} has shape {adj.shape}, the dataset "
                                 f"{dataset.graph.adj.shape}: delete it")
        else:
            if attack in ADAPTIVE:
                if told is None:
                    raise InputError(f"{attack} attacks a defence: pass what it is told of it (defences.tell)")
                attacked = ADAPTIVE_ATTACKS[attack](dataset.graph, rate, seed, self.epochs, told)
            else:
                attacked = LIVE_ATTACKS[attack](dataset.graph, rate, seed, self.epochs)
            adj = sp.csr_matrix(attacked, dtype=np.float32)
            self.cache.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: sp.save_npz(f, adj))
        return dataset.graph.with_adj(adj)

    def _load_preperturbed(self, dataset: Dataset, attack: str, rate: float) -> Graph:
        if attack == "meta" and rate == 0:
            return dataset.graph
        if not dataset.named:
            raise InputError(f"{attack} needs the pre-perturbed Pro-GNN graphs; {dataset.name} is a file "
                             "and has none")
        key = (dataset.name, attack, rate)
        if key not in self._preperturbed:
            try:
                graph = load_graph(dataset.name, attack, rate if rate > 0 else 1.0, root=self.root)
            except FileNotFoundError as error:
                raise FileNotFoundError(f"no pre-perturbed {attack} graph of {dataset.name} at rate {rate:g}: "
                                        f"{error}") from None
            self._preperturbed[key] = graph if rate > 0 else dataclasses.replace(graph, adj=graph.clean_adj)
        return self._preperturbed[key]
