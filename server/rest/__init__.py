"""The HTTP/JSON bridge (aiohttp): :mod:`.app` builds the application and the send routes;
one module per area of routes (:mod:`.controls`, :mod:`.reports`, :mod:`.users`,
:mod:`.preview`); request reading (:mod:`.params`, :mod:`.content`, :mod:`.users_csv`);
answers (:mod:`.rendering`); the OpenAPI document (:mod:`.openapi`,
:mod:`.openapi_schemas`).

May import: ``tgbroadcast.core`` (service, rules, domain, tasks), :mod:`tgbroadcast.server.auth`
and ``tgbroadcast.v1`` (the OpenAPI schemas read the protobuf enums).
"""
