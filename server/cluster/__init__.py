"""Many worlds over many workers: the front door's own bookkeeping, apart from any transport.

``placement``: which worker holds which world, leases with idle expiry, spread by declared capacity, drain and
worker loss. It holds only ids, counts and timestamps, imports neither Ray nor grpc nor torch, and takes the time
as an argument, so the front door, the tests and ``benchmarks/sim_placement.py`` drive the same code.
"""
