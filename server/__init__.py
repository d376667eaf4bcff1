"""The API transports: thin adapters over :mod:`tgbroadcast.core.service`.

* :mod:`.grpc` — the gRPC ``BroadcastService`` and its protobuf converters.
* :mod:`.rest` — the HTTP/JSON bridge: REST routes, SSE, OpenAPI.
* :mod:`.auth` — bearer tokens, the same check for both.

May import: ``tgbroadcast.core`` (service, rules, domain, tasks) and ``tgbroadcast.v1``; never the
store or the queue directly, the worker or the launcher.
"""
