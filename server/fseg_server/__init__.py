"""fseg's server side: slides, feature extractors, concept banks, factorization,
vectorizing and the gRPC service. Needs torch; the light client does not."""

import os

# OpenMP threads that spin while waiting starve the reader threads and the
# other jobs on a busy machine (factorization times then swing by 100x); set
# before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# A CPU forward allocates and frees activations of tens to hundreds of MB per
# batch, and glibc hands each one back to the kernel: every batch then faults
# its memory in again, 4 KiB at a time. With this, torch asks for transparent
# huge pages on buffers of 2 MiB and more: 20x fewer page faults and about
# 20% more timm:resnet18 tiles per second on a 2-core CPU (bench/bench_slide.py);
# the cheap stain extractor loses about 10% (README, Serving).
# torch reads it when it loads, so fseg_server must be imported first; set
# THP_MEM_ALLOC_ENABLE=0 to opt out. Some torch builds read the C10_ spelling.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
os.environ.setdefault("C10_THP_MEM_ALLOC_ENABLE", os.environ["THP_MEM_ALLOC_ENABLE"])

__version__ = "0.1.0"
