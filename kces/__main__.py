"""Command line: ``kces demo`` (also ``python -m kces demo``)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kces", description="Kernel-Complexity Edge Sanitization for GNNs")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="Cora under 20%% Metattack: GCN accuracy with and without KCES")
    demo.add_argument("--seeds", type=int, default=5, help="training seeds (default 5)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.seeds < 1:
            parser.error("--seeds must be >= 1")
        from .demo import run_demo

        run_demo(args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
