"""The engine: memory, renderer, generators, queries and the world loop (no gRPC, no server, no SDK).

Numba's parallel kernels try the threading layers in ``NUMBA_THREADING_LAYER_PRIORITY`` order; its default tries
TBB first, which on a too-old TBB warns once per process and is skipped. OpenMP comes first here (numba falls back to
TBB, then the workqueue, where it is missing); a value you set yourself is kept. OpenMP's idle threads sleep at
once (``OMP_WAIT_POLICY=PASSIVE`` unless you set it, read when an OpenMP runtime loads: numba's, and torch's when
torch is imported after this package): a spinning idle thread takes a core from the other engine threads, and on a
machine whose cores are all busy made a tiny parallel kernel take ~6 ms instead of ~40 us. Compiled kernels are cached in a
folder named by a hash of the engine's sources (``kernel_cache``), so a change to any engine module never loads
another version's machine code.
"""

import os

from worldweave.bridge.kernel_cache import choose_cache_folder

os.environ.setdefault("NUMBA_THREADING_LAYER_PRIORITY", "omp tbb workqueue")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
choose_cache_folder()
