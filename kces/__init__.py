"""KCES: Kernel-Complexity Edge Sanitization for graph neural networks.

Training-free defence against adversarial edges: score every edge by how much the graph
kernel complexity of the labels drops when it is removed, and prune the suspicious ones.
"""
from .adapters import sanitize_adj, sanitize_networkx
from .sanitize import Sanitized, kc_scores, sanitize
from .synthetic import sbm_graph
from .transform import KCES

__all__ = ["KCES", "Sanitized", "kc_scores", "sanitize", "sanitize_adj", "sanitize_networkx", "sbm_graph"]
__version__ = "0.1.0"
