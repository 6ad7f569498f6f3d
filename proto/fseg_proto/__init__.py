"""The fseg wire protocol (``fseg.v1``), shared by the server and the light client.

>>> from fseg_proto import fseg_pb2, fseg_pb2_grpc
"""

from .v1 import fseg_pb2, fseg_pb2_grpc

PROTOCOL = "fseg.v1"

__all__ = ["PROTOCOL", "fseg_pb2", "fseg_pb2_grpc"]
