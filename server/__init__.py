"""The API transports: thin adapters over :mod:`tgbroadcast.core.service`.

* :mod:`.grpc` — the gRPC ``BroadcastService`` and its protobuf converters.
* :mod:`.rest` — the HTTP/JSON bridge: REST routes, SSE, OpenAPI.
* :mod:`.auth` — bearer tokens, the same check for both, and who is calling.
* :mod:`.guards` — the network allow-list, per-token request rate and failed-authentication
  throttle, the same for both.
* :mod:`.tls` — TLS and mutual TLS for both listeners; renewed certificate files are
  picked up without a restart.
* :mod:`.streams` — the open watch streams of both (``server.max_watchers``), ended when the
  process drains.
* :mod:`.token_view` — what the calling API token may do (``GET /v1/token``, ``GetToken``).

May import: ``tgbroadcast.core`` (service, rules, domain, tasks, health) and ``tgbroadcast.v1``;
never the store or the queue directly, the worker or the launcher.
"""
