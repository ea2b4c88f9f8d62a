"""Defences: edge-level stages chained with ``+`` (applied left to right), then the model.

Stages that rewrite the adjacency: ``kces`` (:func:`kces.sanitize_adj`, package defaults) and
its variants of :data:`KCES_VARIANTS` (the ablation), ``jaccard`` (DeepRobust ``GCNJaccard``'s
pruning, :func:`jaccard_prune`, threshold 0.01), ``svd`` (DeepRobust ``GCNSVD``'s rank-k
reconstruction, dense and weighted) and ``anchor`` (:func:`kces.anchor_adj`, package defaults: the
feature anchors joined to what the stages before it keep; last of the edge stages, on graphs with
features). Model defences replace the trained model and come last:
``rgcn`` (DeepRobust ``RGCN``) and ``prognn`` (DeepRobust ``ProGNN``, which learns the
structure; slow). ``none`` is no defence; e.g. ``kces+jaccard`` runs KCES, then Jaccard on its
output.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import svds

from ..adapters import anchor_adj, sanitize_adj
from ..anchors import feature_anchors
from ..errors import InputError
from ..graph import node_mask
from ..labels import (EXCESS_Z, MIN_NEIGHBOURHOOD_OVERLAP, feature_class_scores, is_identity_like,
                      label_disagreement, label_score_sets)
from ..options import Anchoring, Complexity, Pruning
from ..prune import (AUTO_FEATURE_NEIGHBOURS, AUTO_THRESHOLD_SCALE, AUTO_UNLABELLED_WEIGHT,
                     FEATURE_NEIGHBOURS_MAX_NODES, candidate_mask, feature_neighbours, unlabelled_weight)
from .attacks import Told
from .datasets import Dataset, Graph, upper_pairs
from .metrics import accuracy_on
from .models import EPOCHS, seed_everything
from .names import DEFENCES, MODEL_DEFENCES, SVD_RANK

LATER_FIELDS = {"unlabelled_weight": 1.0, "feature_neighbours": 0}
"""Option fields added after the first keys were made → the value that gives the rule before
them: left out of :func:`edge_stages_key` at that value, so that the earlier keys stand."""


def earlier_rule(**fields: Any) -> Pruning:
    """A :class:`kces.Pruning` of ``fields`` with every :data:`LATER_FIELDS` field not among them at
    its earlier value: a benchmark variant that keeps its measured rule whatever the package default."""
    return Pruning(**{**LATER_FIELDS, **fields})


KCES_VARIANTS: dict[str, tuple[Pruning, Complexity]] = {
    "kces": (Pruning(), Complexity()),
    "kces-both": (earlier_rule(label_source="both"), Complexity()),
    "kces-nbr": (earlier_rule(label_source="neighbourhood"), Complexity()),
    "kces-features": (earlier_rule(label_source="features"), Complexity()),
    "kces-top10": (earlier_rule(ratio=0.1, label_check=False, candidates="all", label_source="features"), Complexity()),
    "kces-kc-only": (earlier_rule(label_check=False, label_source="features"), Complexity()),
    "kces-labels-only": (earlier_rule(threshold=None, label_source="features"), Complexity()),
    "kces-k2": (earlier_rule(label_source="features"), Complexity(k=2)),
    "kces-top2": (earlier_rule(label_top_k=2, label_source="features"), Complexity()),
    "kces-nbr-labels-only": (earlier_rule(threshold=None, label_source="neighbourhood"), Complexity()),
    "kces-both-labels-only": (earlier_rule(threshold=None, label_source="both"), Complexity()),
    "kces-soft": (earlier_rule(label_source="both", unlabelled_weight=0.25), Complexity()),
    "kces-soft-half": (earlier_rule(label_source="both", unlabelled_weight=0.5), Complexity()),
    "kces-smooth-half": (earlier_rule(label_source="both", unlabelled_weight=0.5, feature_neighbours=20), Complexity()),
}
"""The package default (both label sources, the feature labels read off features smoothed over
their nearest feature neighbours, :data:`kces.prune.AUTO_FEATURE_NEIGHBOURS`; edges between
unlabelled nodes whose graph-free labels disagree down-weighted,
:data:`kces.prune.AUTO_UNLABELLED_WEIGHT`) and the variants of the benchmarks, none of which
smooths but the last: the default before 2026-11-28 (``kces-both``: no down-weighting where there are
features), the rule with neighbourhood-voted labels alone (``kces-nbr``, the default until the
vote-moving attack) and with feature labels alone (``kces-features``, the default before that;
both chosen against on validation nodes, ``benchmarks/selection_adaptive.py``); the ablation's
variants of the feature-label rule (the paper's literal reading: the 10% highest-KC edges; the KC
bound without the label check; the label check without the KC bound; two hops; the label check
that accepted an unlabelled node's two best feature classes), and the label checks of the
neighbourhood rule and of ``kces-both`` without the KC bound; ``kces-both`` down-weighting those
edges to 0.25 (``kces-soft``, chosen on validation nodes by ``benchmarks/reweight.py``, then
against by ``benchmarks/selection_adaptive.py``) and to 0.5 (``kces-soft-half``: the default on
graphs with features from the fourth to the fifth session of 2026-11-28); the default of the fifth
to the sixth, which smooths, at 0.5 (``kces-smooth-half``). Their settings are
spelled out (:func:`earlier_rule`), so that their keys (:func:`edge_stages_key`) do not move with
the package default."""
ANCHORING = Anchoring(k=10, weight=0.5)
"""The ``anchor`` stage's settings, spelled out so that its key (:func:`edge_stages_key`) does not
move with the package default."""
PRUNING = (*KCES_VARIANTS, "jaccard")
"""Stages that only remove edges: their output is scored against the attacker's insertions."""
JACCARD_THRESHOLD = 0.01
"""``jaccard``'s similarity threshold (DeepRobust ``GCNJaccard``'s default)."""
RGCN_HIDDEN = 32
PROGNN_EPOCHS = 400
PROGNN_ARGS = dict(debug=False, only_gcn=False, lr=0.01, weight_decay=5e-4, hidden=16, dropout=0.5, alpha=5e-4,
                   beta=1.5, gamma=1.0, lambda_=0.0, phi=0.0, inner_steps=2, outer_steps=1, lr_adj=0.01,
                   symmetric=False)
"""Pro-GNN's ``train.py`` defaults (``epochs`` from the runner, default :data:`PROGNN_EPOCHS`)."""


def parse_defence(name: str) -> tuple[str, ...]:
    """``"none"`` → ``()``, ``"kces+jaccard"`` → ``("kces", "jaccard")``. Raises ``ValueError`` for
    an unknown or repeated stage, or a model defence that is not last."""
    if name == "none":
        return ()
    stages = tuple(name.split("+"))
    for i, stage in enumerate(stages):
        if stage not in DEFENCES or stage == "none":
            raise InputError(f"unknown defence {name!r}; expected one of {', '.join(DEFENCES)} "
                             "or a '+' chain of them such as kces+jaccard")
        if stage in MODEL_DEFENCES and i != len(stages) - 1:
            raise InputError(f"defence {name!r}: {stage} trains its own model and must come last")
        if stage == "anchor" and any(later not in MODEL_DEFENCES for later in stages[i + 1:]):
            raise InputError(f"defence {name!r}: anchor joins edges no later edge stage may judge; it comes "
                             "last of the edge stages")
    if len(set(stages)) != len(stages):
        raise InputError(f"defence {name!r} repeats a stage")
    return stages


def skip_reason(stages: tuple[str, ...], dataset: Dataset, model: str, optimizer: str) -> str | None:
    """Why this defence cannot run with this model/optimizer on this dataset, or None."""
    for stage in ("jaccard", "anchor"):
        if stage in stages and dataset.featureless:
            return f"{stage} needs node features; {dataset.name} has none (identity features)"
    if (model, optimizer) == ("gcn", "adam"):
        return None
    if stages and stages[-1] in MODEL_DEFENCES:
        return f"{stages[-1]} is its own GCN-type model trained with Adam: it pairs only with gcn/adam"
    if "svd" in stages:
        return "svd (GCNSVD) gives a dense n×n adjacency: only DeepRobust's GCN (gcn/adam) propagates it densely"
    return None


@dataclass(frozen=True)
class Defended:
    """``adj``: the (n, n) adjacency the model trains on; ``pruned``: the output of the last
    pruning stage (None without one); ``seconds``: wall time of the edge stages."""

    adj: sp.csr_matrix
    pruned: sp.csr_matrix | None
    seconds: float


def feature_jaccard(features: sp.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Jaccard similarity of the binary features of the node pairs (``rows[i]``, ``cols[i]``), 0
    where both have none."""
    feats = (sp.csr_matrix(features) != 0).astype(np.float32).tocsr()
    inter = np.asarray(feats[rows].multiply(feats[cols]).sum(1)).ravel()
    counts = np.asarray(feats.sum(1)).ravel()
    union = counts[rows] + counts[cols] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def jaccard_prune(adj: sp.spmatrix, features: sp.spmatrix, threshold: float = JACCARD_THRESHOLD) -> sp.csr_matrix:
    """Drop edges whose endpoints' binary features have Jaccard similarity < ``threshold``
    (DeepRobust ``GCNJaccard.drop_dissimilar_edges``, binary features)."""
    adj = sp.csr_matrix(adj, dtype=np.float32)
    upper = sp.triu(adj, k=1).tocoo()
    keep = feature_jaccard(features, upper.row, upper.col) >= threshold
    kept = sp.coo_matrix((upper.data[keep], (upper.row[keep], upper.col[keep])), shape=adj.shape)
    return (kept + kept.T).tocsr()


def truncated_svd(adj: sp.spmatrix, rank: int, seed: int) -> sp.csr_matrix:
    """Rank-``rank`` reconstruction ``U_k Σ_k V_kᵀ`` of ``adj`` (DeepRobust ``GCNSVD.truncatedSVD``),
    as a dense-filled float32 CSR; ARPACK's start vector seeded."""
    u, s, vt = svds(sp.csr_matrix(adj, dtype=np.float64), k=rank, random_state=seed)
    return sp.csr_matrix((u * s) @ vt, dtype=np.float32)


def edge_stages_key(stages: tuple[str, ...], svd_rank: int = SVD_RANK) -> str:
    """``"kces+jaccard"``-style name of the edge stages of ``stages`` and 8 hex digits of a hash of
    their settings (every field of a KCES stage's :class:`kces.Pruning` and
    :class:`kces.Complexity` — a field of :data:`LATER_FIELDS` only away from its earlier value —
    and the rule's constants, Jaccard's threshold, SVD's rank), e.g.
    ``"kces-3f9a0c1d"``: what an adaptive attack's cached graph was made against, so that changing
    a default makes a new graph instead of silently reusing the old one (a change of the code
    itself does not: delete those caches). ``"none"`` without edge stages."""
    edge = [stage for stage in stages if stage not in MODEL_DEFENCES]
    if not edge:
        return "none"
    settings = {"jaccard": {"threshold": JACCARD_THRESHOLD}, "svd": {"rank": svd_rank}, "anchor": asdict(ANCHORING)}
    constants = {"auto_threshold_scale": AUTO_THRESHOLD_SCALE, "min_neighbourhood_overlap": MIN_NEIGHBOURHOOD_OVERLAP,
                 "excess_z": EXCESS_Z}
    auto = {"unlabelled_weight": ("auto", AUTO_UNLABELLED_WEIGHT["featureless"], AUTO_UNLABELLED_WEIGHT["features"]),
            "feature_neighbours": ("auto", AUTO_FEATURE_NEIGHBOURS, FEATURE_NEIGHBOURS_MAX_NODES)}

    def fields_of(group: Pruning | Complexity) -> list[tuple[str, object]]:
        return sorted((field, auto[field] if value == "auto" and field in auto else value)
                      for field, value in asdict(group).items()
                      if field not in LATER_FIELDS or value != LATER_FIELDS[field])
    described = [(stage, *(fields_of(group) for group in KCES_VARIANTS[stage]), sorted(constants.items()))
                 if stage in KCES_VARIANTS else (stage, sorted(settings[stage].items())) for stage in edge]
    return f"{'+'.join(edge)}-{hashlib.sha256(repr(described).encode()).hexdigest()[:8]}"


def apply_edge_stages(stages: tuple[str, ...], graph: Graph, seed: int, svd_rank: int = SVD_RANK) -> Defended:
    """Run the edge stages of ``stages`` on ``graph.adj`` in order (model defences are skipped)."""
    adj, pruned = graph.adj, None
    start = time.perf_counter()
    for stage in stages:
        if stage in KCES_VARIANTS:
            pruning, complexity = KCES_VARIANTS[stage]
            adj = sanitize_adj(adj, graph.features, graph.labels, graph.idx_train, pruning=pruning,
                               complexity=complexity)
        elif stage == "jaccard":
            adj = jaccard_prune(adj, graph.features)
        elif stage == "svd":
            adj = truncated_svd(adj, svd_rank, seed)
        elif stage == "anchor":
            adj = anchor_adj(adj, graph.features, anchoring=ANCHORING)
        if stage in PRUNING:
            pruned = adj
    return Defended(adj=sp.csr_matrix(adj), pruned=pruned, seconds=time.perf_counter() - start)


def edge_defence(stages: tuple[str, ...], graph: Graph, seed: int,
                 svd_rank: int = SVD_RANK) -> Callable[[sp.csr_matrix], sp.csr_matrix]:
    """What an adaptive attacker runs: (n, n) adjacency → what the edge stages of ``stages`` keep
    of it, on ``graph``'s features, labels and split (:func:`apply_edge_stages`), before the
    anchors an ``anchor`` stage joins (graph-free: the attacker is given them,
    :func:`always_anchored`)."""
    before = tuple(stage for stage in stages if stage != "anchor")
    return lambda adj: apply_edge_stages(before, graph.with_adj(adj), seed, svd_rank).adj


def always_anchored(stages: tuple[str, ...], graph: Graph) -> sp.csr_matrix | None:
    """The (n, n) symmetric weighted anchors an ``anchor`` stage of ``stages`` joins to whatever
    graph it is given (they depend on ``graph``'s features alone): what an
    adaptive attacker's surrogate sees beside :func:`edge_defence`'s output; None without one."""
    if "anchor" not in stages:
        return None
    anchors = feature_anchors(torch.from_numpy(graph.features.toarray()), k=ANCHORING.k).numpy()
    return sp.csr_matrix((np.full(anchors.shape[1], ANCHORING.weight, dtype=np.float32), anchors),
                         shape=graph.adj.shape)


ClassScores = Callable[[Pruning], torch.Tensor]
"""A label check's :class:`kces.Pruning` → the (n, C) feature class scores it reads on one graph
(:func:`rule_class_scores`)."""


def scores_on(graph: Graph) -> ClassScores:
    """:func:`rule_class_scores` on ``graph``, each rule's computed once."""
    return functools.cache(lambda pruning: rule_class_scores(pruning, graph))


def tell(stages: tuple[str, ...], graph: Graph, seed: int, svd_rank: int = SVD_RANK) -> Told:
    """What an adaptive attacker is told of the edge stages of ``stages`` on ``graph`` (``seed``
    the defence's, ``svd_rank`` SVD's): the chain itself (:func:`edge_defence`), the pairs it
    always prunes or down-weights (:func:`always_pruned`), the weights it always gives
    (:func:`always_scaled`), the anchors it joins (:func:`always_anchored`) and the class scores
    its label check reads (:func:`always_labelled`); those scores computed once for all of them."""
    class_scores = scores_on(graph)
    return Told(defend=edge_defence(stages, graph, seed, svd_rank), avoid=always_pruned(stages, graph, class_scores),
                scale=always_scaled(stages, graph, class_scores), anchor=always_anchored(stages, graph),
                scores=always_labelled(stages, graph, class_scores))


def always_pruned(stages: tuple[str, ...], graph: Graph,
                  class_scores: ClassScores | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What a rule-aware attacker reads in the code of the edge stages of ``stages``: the node
    pairs they prune or down-weight wherever those pairs stand in ``graph`` (on its features and
    labels alone), as a function of (2, b) int64 pairs → (b,) bool; None if no stage has such a
    rule. A KCES stage's label check on a graph with features (a pair at a training node whose
    labels disagree, :func:`kces.labels.label_disagreement`; neighbourhood labels, which the
    default checks too, are those of ``graph``: edges at training nodes cast no vote, so they
    stand for every graph with the same edges between unlabelled nodes) and the pairs of
    unlabelled nodes it down-weights (:func:`always_scaled`); Jaccard's feature similarity below
    its threshold. The KC bound, the featureless checks and SVD depend on the whole graph: not
    here. ``class_scores``: the rules' class scores on ``graph``, shared by the caller (default
    :func:`scores_on`)."""
    class_scores = class_scores or scores_on(graph)
    x, y = torch.from_numpy(graph.features.toarray()), torch.from_numpy(graph.labels)
    train, num_classes = torch.from_numpy(graph.idx_train), int(graph.labels.max()) + 1
    rules = []
    for pruning in [] if is_identity_like(x) else label_checks(stages):
        edges = upper_pairs(graph.adj)  # the graph's edges cast the neighbourhood votes
        features = class_scores(pruning)
        score_sets = label_score_sets(edges, features, node_mask(train, graph.num_nodes), pruning.label_source)
        rules += [lambda pairs, pruning=pruning, scores=scores: (
            candidate_mask(pairs, train, graph.num_nodes, pruning)
            & label_disagreement(pairs, x, y, train, num_classes, pruning.label_top_k, scores=scores))
            for scores in score_sets]
        if unlabelled_weight(pruning, featureless=False) < 1.0:
            rules.append(_unlabelled_disagreement(pruning, graph, features))
    if "jaccard" in stages:
        rules.append(lambda pairs: torch.from_numpy(
            feature_jaccard(graph.features, pairs[0].numpy(), pairs[1].numpy()) < JACCARD_THRESHOLD))
    if not rules:
        return None
    return lambda pairs: torch.stack([rule(pairs) for rule in rules]).any(0)


def kces_rules(stages: tuple[str, ...]) -> list[Pruning]:
    """The :class:`kces.Pruning` of each KCES stage of ``stages``, in order."""
    return [KCES_VARIANTS[stage][0] for stage in stages if stage in KCES_VARIANTS]


def label_checks(stages: tuple[str, ...]) -> list[Pruning]:
    """The :class:`kces.Pruning` of each KCES stage of ``stages`` whose label check runs (not a
    ``ratio`` rule), in order: the rules whose pairs and labels an attacker reads off the code."""
    return [rule for rule in kces_rules(stages) if rule.label_check and rule.ratio is None]


def rule_class_scores(pruning: Pruning, graph: Graph) -> torch.Tensor:
    """(n, C) the feature class scores the label check of ``pruning`` reads on ``graph`` (its
    features smoothed over the nearest feature neighbours it asks for,
    :func:`kces.prune.feature_neighbours`): graph-free, so an attacker who knows the rule has them."""
    x, y = torch.from_numpy(graph.features.toarray()), torch.from_numpy(graph.labels)
    return feature_class_scores(x, y, torch.from_numpy(graph.idx_train), int(graph.labels.max()) + 1,
                                neighbours=feature_neighbours(pruning, graph.num_nodes))


def always_labelled(stages: tuple[str, ...], graph: Graph,
                    class_scores: ClassScores | None = None) -> np.ndarray | None:
    """(n, C) the feature class scores the first KCES stage of ``stages`` with a label check reads
    on ``graph`` (:func:`rule_class_scores`), for an attacker that aims by them; None without one, on
    a featureless graph, or when they are the plain feature class scores (no smoothing), which the
    attack computes itself. ``class_scores``: the rules' class scores on ``graph``, shared by the
    caller (default :func:`scores_on`)."""
    checks = label_checks(stages)
    if (not checks or is_identity_like(torch.from_numpy(graph.features.toarray()))
            or not feature_neighbours(checks[0], graph.num_nodes)):
        return None
    return (class_scores or scores_on(graph))(checks[0]).numpy()


def _unlabelled_disagreement(pruning: Pruning, graph: Graph,
                             scores: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """(2, b) pairs → (b,) bool: the pairs of two non-candidate nodes whose feature labels
    disagree, which ``pruning`` (an ``unlabelled_weight`` below 1) down-weights (graph-free);
    ``scores``: the (n, C) feature class scores it reads on ``graph``."""
    x, y = torch.from_numpy(graph.features.toarray()), torch.from_numpy(graph.labels)
    train, num_classes = torch.from_numpy(graph.idx_train), int(graph.labels.max()) + 1
    return lambda pairs: (~candidate_mask(pairs, train, graph.num_nodes, pruning)
                          & label_disagreement(pairs, x, y, train, num_classes, pruning.label_top_k, scores=scores))


def always_scaled(stages: tuple[str, ...], graph: Graph,
                  class_scores: ClassScores | None = None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The weights a KCES stage that re-weights (an ``unlabelled_weight`` below 1) gives node
    pairs wherever they stand in ``graph``, as (2, b) int64 pairs → (b,) float32 (1 where it leaves
    them), for an attacker who differentiates through them; None without such a stage, or on a
    featureless graph (there the pairs it down-weights depend on the whole graph). ``class_scores``:
    the rules' class scores on ``graph``, shared by the caller (default :func:`scores_on`)."""
    if is_identity_like(torch.from_numpy(graph.features.toarray())):
        return None
    class_scores = class_scores or scores_on(graph)
    for pruning in kces_rules(stages):
        weight = unlabelled_weight(pruning, featureless=False)
        if weight < 1.0:
            flagged = _unlabelled_disagreement(pruning, graph, class_scores(pruning))
            return lambda pairs: torch.where(flagged(pairs.cpu()), weight, 1.0).float().to(pairs.device)
    return None


def _rgcn_output(graph: Graph, epochs: int) -> torch.Tensor:
    """(n, C) log-probabilities of DeepRobust's RGCN (32 hidden, Adam) at its best validation epoch."""
    from deeprobust.graph.defense import RGCN

    model = RGCN(nnodes=graph.num_nodes, nfeat=graph.features.shape[1], nhid=RGCN_HIDDEN,
                 nclass=int(graph.labels.max()) + 1)
    model.fit(graph.features, graph.adj, graph.labels, graph.idx_train, graph.idx_val, train_iters=epochs,
              verbose=False)
    return model.output


def _prognn_output(graph: Graph, epochs: int) -> torch.Tensor:
    """(n, C) log-probabilities of DeepRobust's ProGNN (GCN backbone) on its best learned graph."""
    from deeprobust.graph.defense import GCN, ProGNN

    args = SimpleNamespace(**PROGNN_ARGS, epochs=epochs)
    gcn = GCN(nfeat=graph.features.shape[1], nhid=args.hidden, nclass=int(graph.labels.max()) + 1,
              dropout=args.dropout, device="cpu")
    features = torch.from_numpy(graph.features.toarray())
    prognn = ProGNN(gcn, args, "cpu")
    prognn.fit(features, torch.from_numpy(graph.adj.toarray()), torch.from_numpy(graph.labels), graph.idx_train,
               graph.idx_val)
    prognn.model.eval()
    with torch.no_grad():
        return prognn.model(features, prognn.best_graph if prognn.best_graph is not None
                            else prognn.estimator.normalize())


def model_defence_accuracy(name: str, graph: Graph, seed: int, nodes: np.ndarray, epochs: int | None) -> float:
    """Accuracy in [0, 1] on ``nodes`` of DeepRobust's RGCN or ProGNN trained on ``graph`` under
    ``seed`` (``epochs`` of training; None: 200 for RGCN, :data:`PROGNN_EPOCHS` for ProGNN)."""
    seed_everything(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # DeepRobust prints its progress
        if name == "rgcn":
            output = _rgcn_output(graph, epochs or EPOCHS)
        else:
            output = _prognn_output(graph, epochs or PROGNN_EPOCHS)
    return accuracy_on(output, graph.labels, nodes)
