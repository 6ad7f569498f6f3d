"""``fseg-server serve``: the gRPC service (filled in by the gRPC layer)."""

from __future__ import annotations

import argparse


def add_serve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("serve", help="serve segmentation over gRPC")
    p.set_defaults(handler=lambda args: 0)
