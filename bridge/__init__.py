"""The engine: memory, renderer, generators, queries and the world loop (no gRPC, no server, no SDK).

Numba's parallel kernels try the threading layers in ``NUMBA_THREADING_LAYER_PRIORITY`` order; its default tries
TBB first, which on a too-old TBB warns once per process and is skipped. OpenMP comes first here (numba falls back to
TBB, then the workqueue, where it is missing); a value you set yourself is kept.
"""

import os

os.environ.setdefault("NUMBA_THREADING_LAYER_PRIORITY", "omp tbb workqueue")
