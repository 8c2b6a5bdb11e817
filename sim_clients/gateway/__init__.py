"""A ZMQ + msgpack gateway for engines that don't speak gRPC (Unity, Unreal, custom C++ or C# engines).

Layers, each usable alone (ML-Agents' split of transport and logic):

* :mod:`.schema`    -- the wire schema, derived from ``world.proto``'s descriptors plus the table of what the gateway
  adds (which fields are points, directions, lengths, poses); ``SCHEMA.md`` is generated from it (:mod:`.schema_doc`);
* :mod:`.errors`    -- error classes, each with the gRPC status name it travels as;
* :mod:`.messages`  -- wire maps <-> proto messages, converting engine values to canonical ones and back (pure);
* :mod:`.translate` -- the conversions themselves, per kind of value (pure);
* :mod:`.codec`     -- bytes <-> records: size limit, msgpack, envelope and version checks;
* :mod:`.server`    -- the ZMQ ROUTER loop forwarding each request as its RPC to a ``worldweave serve``;
* :mod:`.engine_client` -- a Python reference engine (``GatewayClient``), the executable form of ``SCHEMA.md``.
"""
