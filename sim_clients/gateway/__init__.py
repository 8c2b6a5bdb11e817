"""A ZMQ + msgpack gateway for engines that don't speak gRPC (Unity, Unreal, custom C++ or C# engines).

Layers, each usable alone (ML-Agents' split of transport and logic):

* :mod:`.errors`   -- error classes, each with the gRPC status name it travels as;
* :mod:`.messages` -- the wire schema as typed records, pure ``to_wire`` / ``from_wire`` (``SCHEMA.md`` documents
  every field with its unit);
* :mod:`.codec`    -- bytes <-> records: size limit, msgpack, envelope and version checks;
* :mod:`.translate` -- engine convention <-> canonical poses, points and frames (pure);
* :mod:`.server`   -- the ZMQ ROUTER loop forwarding to a ``worldweave serve`` through ``WorldClient``;
* :mod:`.engine_client` -- a Python reference engine (``GatewayClient``), the executable form of ``SCHEMA.md``.
"""
