"""A Telegram Bot API simulator: a real HTTP server that answers like api.telegram.org.

Used by the test suite, by ``make demo`` and by benchmarks. Run it alone with
``python -m tgbroadcast.simulator --host 127.0.0.1 --port 8081``; embed it with::

    async with Simulator() as sim:
        bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(sim.api_url)))

The methods in the bundled Bot API spec are known; :data:`IMPLEMENTED` are answered, the
others refuse with a 501 saying so. Behaviour knobs: declared chat states (:class:`ChatState`),
injected faults (:class:`Fault`), flood control (:class:`RateLimits`).

Formatting (``parse_mode``) is parsed by the simulator's own :mod:`tgbroadcast.simulator.markup`,
written from Telegram's rules, never by the service's parser: a bug there cannot hide in tests.

* :mod:`.server` — ``Simulator``: the real HTTP server, reachable where api.telegram.org
  would be.
* :mod:`.botapi` — one Bot API request in, Telegram's answer out, independent of HTTP.
* :mod:`.edits` — after sending: deleting and editing sent messages.
* :mod:`.envelope` — the Bot API's answer envelope, and the failures that fill it.
* :mod:`.spec` — the Bot API's machine-readable description (``spec/api.json``).
* :mod:`.chats` — the chats the simulated Telegram knows, and their declared states.
* :mod:`.messages` — the messages bots sent, and how their text is measured.
* :mod:`.files` — stored files: minting file_ids and the media objects of messages.
* :mod:`.urls` — media by URL: what Telegram refuses to fetch, per kind and size.
* :mod:`.keyboards` — inline keyboards as Telegram checks them.
* :mod:`.markup` — ``parse_mode`` (HTML, MarkdownV2, legacy Markdown) as Telegram parses it.
* :mod:`.faults` — injected faults: the next N matching calls fail.
* :mod:`.ratelimits` — Telegram's flood control, simulated with sliding windows.
* :mod:`.recording` — the record of every Bot API call answered.
* :mod:`.control` — the HTTP control API under ``/_sim``, for another process's tests.

May import: nothing else of ``tgbroadcast`` (it must not share a bug with the service).
"""

from __future__ import annotations

from tgbroadcast.simulator.botapi import IMPLEMENTED, TOKEN_PATTERN
from tgbroadcast.simulator.chats import ChatState, ChatType
from tgbroadcast.simulator.faults import Fault, FaultKind
from tgbroadcast.simulator.files import FileKind
from tgbroadcast.simulator.ratelimits import Limit, RateLimits
from tgbroadcast.simulator.recording import Call, MediaSource
from tgbroadcast.simulator.server import Simulator
from tgbroadcast.simulator.spec import Spec, default_spec

__all__ = [
    "IMPLEMENTED",
    "TOKEN_PATTERN",
    "Call",
    "ChatState",
    "ChatType",
    "Fault",
    "FaultKind",
    "FileKind",
    "Limit",
    "MediaSource",
    "RateLimits",
    "Simulator",
    "Spec",
    "default_spec",
]
