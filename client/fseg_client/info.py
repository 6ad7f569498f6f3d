"""``fseg info`` and ``fseg health``: what a server offers, and whether it serves."""

from __future__ import annotations

import argparse
import json

import grpc
from google.protobuf.json_format import MessageToDict

from fseg_proto import fseg_pb2

from .connect import Connection, credentials_from_args, parse_servers
from .errors import EXIT_FAILED, EXIT_OK, ClientError

INFO_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 10.0


def _servers(args: argparse.Namespace) -> list[str]:
    addresses = parse_servers(args.server)
    if not addresses:
        raise ClientError("give the server to ask with --server HOST:PORT")
    return addresses


def _mib(n: int) -> str:
    """Bytes as MiB, or GiB from 1 GiB up."""
    if not n:
        return "—"
    return f"{n / 2**30:.0f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _fmt_float(value: float) -> str:
    return f"{value:g}" if value else "—"


def format_info(address: str, info: fseg_pb2.ServerInfo) -> str:
    """A ServerInfo as aligned lines a person can read."""
    limits = info.limits
    lines = [
        f"server      {address}",
        f"version     {info.version or '?'} (protocol {info.protocol or '?'})",
        f"device      {info.device or '?'}",
        f"jobs        {info.running_jobs} running, {info.queued_jobs} queued "
        f"(at most {limits.max_queued_jobs or '∞'} queued)",
        "uploads     "
        + (f"enabled, up to {_mib(limits.upload_max_bytes)}" if info.uploads_enabled else "off"),
        f"messages    up to {_mib(limits.max_message_bytes)}, "
        f"result chunks of {_mib(limits.chunk_bytes)}",
        *_cost_lines(limits),
        "extractors",
    ]
    for e in info.extractors:
        default = " (default)" if e.is_default else ""
        lines.append(
            f"  {e.name}{default}: {e.feature_dim} features, stride {e.stride} px, "
            f"{_fmt_float(e.mpp)} µm/px, weights {e.weights or '?'}"
        )
    lines.append("concept banks" if info.banks else "concept banks: none loaded")
    for b in info.banks:
        ks = ",".join(map(str, b.k)) or "?"
        lines.append(
            f"  {b.name}: {b.extractor} ({b.feature_dim} features), k = {ks}, "
            f"{_fmt_float(b.mpp)} µm/px, sha256 {b.sha256[:12] or '?'}"
        )
    if info.versions:
        lines.append("versions")
        lines.extend(f"  {name} {info.versions[name]}" for name in sorted(info.versions))
    return "\n".join(lines)


def _cost_lines(limits: fseg_pb2.Limits) -> list[str]:
    """What one job may cost on this server (absent from servers before fseg 0.1's limits)."""
    if not limits.max_model_mpx:
        return []
    return [
        f"per slide   at most {_fmt_float(limits.max_slide_mm)} mm a side, "
        f"{limits.max_model_mpx:,.0f} Mpx through the model, a thumbnail from at most "
        f"{limits.max_thumbnail_mpx:,.0f} Mpx, plain images up to {limits.max_image_mpx:,.0f} Mpx",
        f"per request classify rank up to {limits.max_components}, "
        f"ROI up to {limits.max_roi_vertices:,} vertices",
    ]


def run_info(args: argparse.Namespace) -> int:
    """Print each server's GetServerInfo; exit 1 if any cannot be asked."""
    creds = credentials_from_args(args)
    failed, payloads = [], []
    for address in _servers(args):
        conn = Connection(address, creds)
        try:
            info = conn.stub.GetServerInfo(
                fseg_pb2.ServerInfoRequest(), timeout=INFO_TIMEOUT_S, metadata=conn.metadata
            )
        except grpc.RpcError as exc:
            failed.append(conn.explain(exc))
            continue
        finally:
            conn.close()
        if args.json:
            payload = MessageToDict(
                info, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
            )
            payloads.append({"server": address, **payload})
        else:
            print(format_info(address, info) + "\n")
    if args.json:
        print(json.dumps(payloads[0] if len(payloads) == 1 else payloads, indent=2))
    if failed:
        raise ClientError(" ".join(failed).rstrip("."), exit_code=EXIT_FAILED)
    return EXIT_OK


def run_health(args: argparse.Namespace) -> int:
    """One line per server; exit 0 only if every server says SERVING."""
    creds = credentials_from_args(args)
    code = EXIT_OK
    for address in _servers(args):
        conn = Connection(address, creds)
        try:
            status = conn.check_health(HEALTH_TIMEOUT_S)
        except grpc.RpcError as exc:
            status = "UNREACHABLE"
            print(f"{address}: {status}: {conn.explain(exc)}")
        else:
            print(f"{address}: {status}")
        finally:
            conn.close()
        if status != "SERVING":
            code = EXIT_FAILED
    return code
