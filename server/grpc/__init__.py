"""The gRPC transport: :mod:`.servicer` serves ``tgbroadcast.v1.BroadcastService``; each
converter module turns one area's protobuf messages into domain values and back, once, at
the edge: :mod:`.messages` (requests, broadcasts, users), :mod:`.content` (rich content),
:mod:`.controls` (lifecycle fields and lists), :mod:`.reports` (deliveries).
:mod:`.interceptors` holds the allow-list, the token check, the limits and the access log.
:mod:`.health` keeps gRPC health in step with readiness; :mod:`.watch` is
``WatchBroadcast``'s stream (bounded, ended when the server drains).

May import: ``tgbroadcast.core`` (service, rules, domain, health, tasks), ``tgbroadcast.v1``,
:mod:`tgbroadcast.server.auth`, :mod:`tgbroadcast.server.guards` and
:mod:`tgbroadcast.server.streams`.
"""
