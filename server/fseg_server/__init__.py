"""fseg's server side: slides, feature extractors, concept banks, factorization,
vectorizing and the gRPC service. Needs torch; the light client does not."""

__version__ = "0.1.0"
