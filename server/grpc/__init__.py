"""The gRPC transport: :mod:`.servicer` serves ``tgbroadcast.v1.BroadcastService``; each
converter module turns one area's protobuf messages into domain values and back, once, at
the edge: :mod:`.messages` (requests, broadcasts, users), :mod:`.content` (rich content),
:mod:`.controls` (lifecycle fields and lists), :mod:`.reports` (deliveries).

May import: ``tgbroadcast.core`` (service, rules, domain), ``tgbroadcast.v1`` and
:mod:`tgbroadcast.server.auth`.
"""
