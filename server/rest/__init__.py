"""The HTTP/JSON bridge (aiohttp): :mod:`.app` builds the application and the send routes;
one module per area of routes (:mod:`.controls`, :mod:`.reports`, :mod:`.users`,
:mod:`.preview`, :mod:`.health` for ``/livez`` and ``/readyz``); the allow-list, limits,
token check and access log (:mod:`.guards`);
request reading (:mod:`.params`, :mod:`.strict_json`, :mod:`.content`, :mod:`.users_csv`);
answers (:mod:`.rendering`); the OpenAPI document (:mod:`.openapi`, :mod:`.openapi_schemas`,
:mod:`.openapi_examples`, :mod:`.openapi_nulls` for the request fields that take ``null``, and
one ``openapi_*`` module per area added to it);
the connection handler answering malformed HTTP (:mod:`.protocol`, used by the launcher).

May import: ``tgbroadcast.core`` (service, rules, domain, tasks, health),
:mod:`tgbroadcast.server.streams`, :mod:`tgbroadcast.server.auth`,
:mod:`tgbroadcast.server.guards` and ``tgbroadcast.v1`` (the OpenAPI schemas read the protobuf
enums).
"""
