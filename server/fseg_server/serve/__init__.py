"""The gRPC service (fseg.v1) and everything a server holds while it runs."""

from .server import RunningServer, ServeConfig, serve_forever, start_server

__all__ = ["RunningServer", "ServeConfig", "serve_forever", "start_server"]
