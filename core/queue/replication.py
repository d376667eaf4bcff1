"""Replicas of what the service keeps in JetStream: its streams, KV buckets and object store.

``nats.replicas`` (1-5) is how many servers of a JetStream cluster hold each of them; with
3, losing one node loses nothing and the cluster goes on. The rule for what exists already
(created by an older version, another process, or an operator): its replica count is raised
to ``nats.replicas``, never lowered — an operator's R5 stays R5 — and a count other than
the setting is logged. A count above the cluster's size is refused by the server; that
error names the setting.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from tgbroadcast.core.domain.errors import QueueError

logger = logging.getLogger(__name__)

MAX_REPLICAS = 5
"""JetStream's own maximum."""
_STREAM_CONFIG_CONFLICT = 10058  # "stream name already in use with a different configuration"
SETTLE_TIMEOUT = 30.0
"""Seconds a raised stream is given to have a leader and every new replica caught up."""
_SETTLE_POLL = 0.1


def check_replicas(replicas: int) -> int:
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"replicas must be 1..{MAX_REPLICAS}, got {replicas}")
    return replicas


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig, replicas: int) -> None:
    """Create the stream with ``replicas``, or bring an existing one to ``config`` with its
    replica count raised to ``replicas`` (never lowered)."""
    config.num_replicas = replicas
    try:
        await js.add_stream(config)
        return
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != _STREAM_CONFIG_CONFLICT:
            raise _refused(f"cannot create stream {config.name}", exc, replicas) from exc
    except nats.js.errors.APIError as exc:
        raise _refused(f"cannot create stream {config.name}", exc, replicas) from exc
    assert config.name is not None
    current = await _current_replicas(js, config.name)
    config.num_replicas = max(current, replicas)
    _log_mismatch(f"stream {config.name}", current, replicas)
    try:
        await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise _refused(
            f"stream {config.name} exists with an incompatible configuration", exc, replicas
        ) from exc
    logger.info(
        "updated the configuration of stream %s",
        config.name,
        extra={"stream": config.name, "replicas": config.num_replicas},
    )
    if current < replicas:
        await _settle(js, config.name, replicas)


async def raise_replicas(js: JetStreamContext, stream: str, replicas: int, *, what: str) -> None:
    """Raise the replica count of an existing stream (a KV bucket's ``KV_<bucket>``, an object
    store's ``OBJ_<bucket>``) to ``replicas``; a higher count is kept and logged."""
    try:
        info = await js.stream_info(stream)
    except (nats.errors.Error, TimeoutError) as exc:
        raise QueueError(f"cannot read {what}: {exc!r}") from exc
    current = info.config.num_replicas or 1
    _log_mismatch(what, current, replicas)
    if current >= replicas:
        return
    config = info.config
    config.num_replicas = replicas
    try:
        await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise _refused(f"cannot raise the replicas of {what}", exc, replicas) from exc
    logger.info(
        "raised the replicas of %s from %d to %d",
        what,
        current,
        replicas,
        extra={"stream": stream, "replicas": replicas},
    )
    await _settle(js, stream, replicas)


async def _settle(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Wait until the stream has a leader and its ``replicas - 1`` followers are current, so
    the first write after a raise does not meet the stream mid-move (a warning after
    :data:`SETTLE_TIMEOUT`; the stream goes on settling without us)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while loop.time() < deadline:
        try:
            cluster = (await js.stream_info(stream)).cluster
        except (nats.errors.Error, TimeoutError):
            cluster = None
        if cluster is not None and cluster.leader:
            followers = cluster.replicas or []
            if len(followers) >= replicas - 1 and all(peer.current for peer in followers):
                return
        await asyncio.sleep(_SETTLE_POLL)
    logger.warning(
        "stream %s has not settled on %d replicas after %g s; going on",
        stream,
        replicas,
        SETTLE_TIMEOUT,
        extra={"stream": stream, "replicas": replicas},
    )


async def _current_replicas(js: JetStreamContext, stream: str) -> int:
    try:
        info = await js.stream_info(stream)
    except (nats.errors.Error, TimeoutError) as exc:
        raise QueueError(f"cannot read stream {stream}: {exc!r}") from exc
    return info.config.num_replicas or 1


def _log_mismatch(what: str, current: int, replicas: int) -> None:
    if current > replicas:
        logger.warning(
            "%s has %d replicas, nats.replicas is %d: kept at %d (never lowered)",
            what,
            current,
            replicas,
            current,
            extra={"replicas": current, "setting": replicas},
        )
    elif current < replicas:
        logger.warning(
            "%s has %d replicas, nats.replicas is %d: raising it",
            what,
            current,
            replicas,
            extra={"replicas": current, "setting": replicas},
        )


def _refused(what: str, exc: nats.js.errors.APIError, replicas: int) -> QueueError:
    hint = ""
    if replicas > 1 and "replica" in str(exc.description or "").lower():
        hint = f" (nats.replicas is {replicas}: it needs a JetStream cluster of that many servers)"
    return QueueError(f"{what}: {exc}{hint}")
