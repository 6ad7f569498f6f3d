"""The light fseg client: send whole-slide images to fseg servers and collect the results.

Needs only grpcio, protobuf, numpy, pillow and tqdm; never torch. The command line
entry point is :func:`fseg_client.cli.main` (``fseg``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
