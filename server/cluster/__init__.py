"""Many worlds over many workers (``worldweave serve --ray``): one gRPC API in front of replicas that each hold some
worlds.

``placement``: which worker holds which world, leases with idle expiry, spread by declared capacity, drain and
worker loss; ids, counts and timestamps only, the time passed in, so the front door, the tests and
``benchmarks/sim_placement.py`` drive the same code. ``wire``: the few protobuf fields read from forwarded bytes.
``front_door``: the gRPC server that forwards each world's calls to its holder. ``handoff``: moving a world between
servers through shared storage (save, record log, recovery). ``replica``: the Ray Serve replica running a worldweave
server over shared storage. ``ray_cluster``: starting or joining Ray and deploying the replicas. Only ``replica`` and
``ray_cluster`` import Ray, and only when called.
"""
