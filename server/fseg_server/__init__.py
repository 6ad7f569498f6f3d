"""fseg's server side: slides, feature extractors, concept banks, factorization,
vectorizing and the gRPC service. Needs torch; the light client does not."""

import os

# OpenMP threads that spin while waiting starve the reader threads and the
# other jobs on a busy machine (factorization times then swing by 100x); set
# before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
