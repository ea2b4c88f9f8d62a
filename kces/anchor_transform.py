"""``FeatureAnchors``: the PyTorch Geometric transform that joins feature anchors to a graph."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch_geometric.data import Data, HeteroData
from torch_geometric.transforms import BaseTransform

from .anchors import anchor
from .errors import InputError, InputTypeError
from .options import Anchoring, options


class FeatureAnchors(BaseTransform):
    r"""Joins each node's feature anchors (:mod:`kces.anchors`) to an undirected graph, after
    :class:`kces.KCES`: ``Compose([KCES(), FeatureAnchors()])``.

    Uses the features ``data.x`` and, if present, ``data.edge_weight``. Returns a new ``Data`` whose
    ``edge_index`` holds the input's edges in their order, then the anchors the graph lacked
    (both directions), and whose ``edge_weight`` (E',) holds the input's weights (1 without)
    raised to the anchor weight where an anchor lies on an edge, then the anchor weight: pass it
    to the model (``GCNConv(x, edge_index, edge_weight)``). Every other attribute is kept; the
    input is never modified. A graph with other edge-level attributes (``edge_attr``, ...) is
    refused, since an anchor has no value for them.

    Args:
        anchoring (:class:`kces.Anchoring` or dict, optional): which anchors (default ``k = 10``
            feature neighbours, weight 0.5).
        device (torch.device or str, optional): where the feature cosines are computed (default:
            the data's device).
    """

    def __init__(self, anchoring: Anchoring | Mapping[str, Any] | None = None, *, device: Any = None):
        self.anchoring = options(Anchoring, anchoring, "anchoring")
        self.device = device

    def forward(self, data: Data) -> Data:
        if isinstance(data, HeteroData) or not isinstance(data, Data):
            raise InputTypeError(f"FeatureAnchors expects a homogeneous torch_geometric.data.Data, got "
                                 f"{type(data).__name__}")
        if data.edge_index is None:
            raise InputError("data has no edge_index")
        if getattr(data, "x", None) is None:
            raise InputError("data has no 'x' attribute; FeatureAnchors needs the node features")
        other = [key for key in data.keys() if key not in ("edge_index", "edge_weight") and data.is_edge_attr(key)]
        if other:
            raise InputError(f"data has edge-level attributes {sorted(other)} that an anchor has no value for; "
                             "remove them before FeatureAnchors")
        weight = data.edge_weight if "edge_weight" in data else None
        result = anchor(data.edge_index, data.x, num_nodes=data.num_nodes, edge_weight=weight,
                        anchoring=self.anchoring, device=self.device)
        out = data.clone()
        out.edge_index = result.edge_index.to(data.edge_index.device)
        out.edge_weight = result.edge_weight.to(data.edge_index.device)
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.anchoring})"
