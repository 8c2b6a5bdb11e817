"""worldweave API v1: ``world.proto``, its generated code (``world_pb2``, ``world_pb2_grpc``), and the API version.

Both ends compare ``API_VERSION`` at connect (semver): a different major version is an error, a different minor
version a warning. The ``.proto`` states the same version in its header; ``tests/test_proto.py`` keeps them equal.
"""

API_VERSION = "1.2.0"
"""Semver of the wire API declared in ``world.proto``."""
