"""Variants end to end (#15.4): each recipient gets exactly one of a broadcast's contents —
its language's, else one of the defaults by weight, the same one a preview or a second look
predicts — and GetBroadcast (REST, gRPC), ListDeliveries, the CSV and the live stream say
which, with outcomes per variant. Refused with field paths; a variant broadcast cannot be
edited. On every database: the variants' JSON may pass MySQL's 64 KiB ``TEXT``."""

from __future__ import annotations

import base64
import csv
import io
from collections import Counter
from typing import Any

import grpc
import pytest

from tests.fixtures.grpc_details import bad_request
from tests.fixtures.stack import Stack, on_sqlite
from tests.fixtures.watching import watch
from tests.test_recall import rest
from tgbroadcast.core.rules.variants import choose
from tgbroadcast.core.store import Store
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

GERMANS = list(range(9101, 9111))
BRAZILIANS = [9201, 9202]
OTHERS = list(range(9301, 9361))
LONG = "ü" * 4000
"""Six texts of this many characters: 144 KB of variants' JSON (escaped) in one row."""


def variants_body() -> dict[str, Any]:
    return {
        "user_ids": GERMANS + BRAZILIANS + OTHERS,
        "variants": [
            {"name": "short", "message": "Sale: -20%", "weight": 3},
            {
                "name": "photo",
                "media_type": "photo",
                "media_data": base64.b64encode(b"\x89PNG variant photo").decode(),
                "message": "<b>Sale</b>",
                "parse_mode": "html",
            },
            {"name": "de", "message": "Angebot: -20 %", "language_codes": ["de"]},
            {"name": "pt", "message": "Promoção: -20%", "language_codes": ["PT"]},
            *({"name": f"long{i}", "message": LONG, "language_codes": [f"x{i}"]} for i in range(6)),
        ],
    }


async def upsert_users(stack: Stack) -> None:
    users = [
        *({"id": u, "language_code": "de"} for u in GERMANS),
        *({"id": u, "language_code": "pt-BR"} for u in BRAZILIANS),
        *({"id": u, "language_code": "en"} for u in OTHERS[:30]),
    ]  # the other 30 are unknown until the send records them: no language
    code, answer = await rest(stack, "POST", "/v1/users", {"users": users})
    assert code == 200, answer


def sent_texts(simulator: Simulator) -> dict[int, tuple[str, str]]:
    """Per chat: the method and the text or caption of its one successful send."""
    seen: dict[int, tuple[str, str]] = {}
    for call in simulator.calls:
        if call.ok and call.method in ("sendMessage", "sendPhoto"):
            chat = int(call.params["chat_id"])
            assert chat not in seen, f"{chat} was sent twice"
            seen[chat] = (call.method, str(call.params.get("text") or call.params["caption"]))
    return seen


async def test_each_recipient_gets_its_variant_and_every_report_says_which(
    stack: Stack, simulator: Simulator
) -> None:
    await upsert_users(stack)
    code, accepted = await rest(stack, "POST", "/v1/broadcasts", variants_body())
    assert code == 202, accepted
    broadcast_id = accepted["broadcast_id"]
    streamed = await watch(stack, broadcast_id)
    assert streamed[-1].progress.status == pb.BROADCAST_STATUS_COMPLETED
    everyone = GERMANS + BRAZILIANS + OTHERS
    sent = sent_texts(simulator)
    assert sorted(sent) == sorted(everyone)
    assert {sent[u] for u in GERMANS} == {("sendMessage", "Angebot: -20 %")}
    assert {sent[u] for u in BRAZILIANS} == {("sendMessage", "Promoção: -20%")}
    _, report = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
    names = [v["name"] for v in report["variants"]]
    expected = {}
    for user in OTHERS:  # the defaults, by weight, as choose() predicts
        index = choose(
            [_stub(v) for v in report["variants"]],
            broadcast_id=broadcast_id,
            user_id=user,
            language_code=None,
        )
        expected[user] = names[index]
        want = ("sendMessage", "Sale: -20%") if index == 0 else ("sendPhoto", "<b>Sale</b>")
        assert sent[user] == want, user
    assert set(expected.values()) == {"short", "photo"}  # 60 users: both get some
    photos = [c for c in simulator.calls if c.method == "sendPhoto" and c.ok]
    # The variant's photo is uploaded once; the rest go by the file_id kept in SQL.
    assert [c.media for c in photos].count("upload") == 1
    assert {c.media for c in photos} <= {"upload", "file_id"}
    assert await stack_store_file_id(stack, broadcast_id, variant=1) is not None
    by_variant = Counter(expected.values()) + Counter(de=10, pt=2)
    assert {v["name"]: v["sent"] for v in report["variants"]} == {
        **dict.fromkeys(names, 0),
        **by_variant,
    }
    assert report["variants"][2] == {
        "name": "de",
        "weight": 1,
        "language_codes": ["de"],
        "message": "Angebot: -20 %",
        "media_type": "text",
        "media_url": "",
        "sent": 10,
        "failed": 0,
        "outcome_counts": {"sent": 10},
        "clicks": 0,
    }
    assert report["message"] == "Sale: -20%"  # the first variant's
    chosen = {**expected, **dict.fromkeys(GERMANS, "de"), **dict.fromkeys(BRAZILIANS, "pt")}
    # The stream, the deliveries list, the CSV and gRPC agree.
    assert {m.result.user_id: m.result.variant for m in streamed[:-1]} == chosen
    _, page = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries?page_size=1000")
    assert {r["user_id"]: r["variant"] for r in page["results"]} == chosen
    _, text = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries.csv")
    rows = csv.DictReader(io.StringIO(text, newline=""))
    assert {int(r["user_id"]): r["variant"] for r in rows} == chosen
    async with stack.stub() as stub:
        got = await stub.GetBroadcast(
            pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
        )
        listed = await stub.ListDeliveries(
            pb.ListDeliveriesRequest(broadcast_id=broadcast_id, page_size=1000),
            metadata=stack.metadata,
        )
        # A preview of the stored broadcast shows each user's variant: the one recorded, also
        # for a user whose language changed since.
        code, _ = await rest(
            stack, "POST", "/v1/users", {"users": [{"id": GERMANS[0], "language_code": "pt"}]}
        )
        assert code == 200
        for user in (OTHERS[0], OTHERS[-1], GERMANS[0]):
            preview = await stub.PreviewMessage(
                pb.PreviewMessageRequest(broadcast_id=broadcast_id, user_id=user),
                metadata=stack.metadata,
            )
            assert preview.variant == chosen[user]
    assert [(v.name, v.sent) for v in got.broadcast.variants] == [
        (v["name"], v["sent"]) for v in report["variants"]
    ]
    assert got.broadcast.variants[5].message == LONG
    assert {r.user_id: r.variant for r in listed.results} == chosen


def _stub(report: dict[str, Any]) -> Any:
    from tgbroadcast.core.domain.model import Content, Variant

    return Variant(
        name=report["name"],
        weight=report["weight"],
        language_codes=tuple(report["language_codes"]),
        content=Content(message=report["message"]),
    )


@on_sqlite
async def test_variants_are_refused_field_by_field_on_both_transports(stack: Stack) -> None:
    body: dict[str, Any] = {
        "message": "top level",
        "user_ids": [1],
        "variants": [
            {"name": "a", "message": "x" * 5000},
            {"name": "A", "message": "y", "language_codes": ["en"]},
            {"name": "c", "media_type": "photo", "media_data": "!!"},
        ],
    }
    code, problem = await rest(stack, "POST", "/v1/broadcasts", body)
    assert code == 400, problem
    assert {e["field"] for e in problem["errors"]} == {"variants[2].media_data"}
    body["variants"][2] = {"name": "c", "message": "z", "language_codes": ["d e"]}
    code, problem = await rest(stack, "POST", "/v1/broadcasts", body)
    assert code == 400
    assert {e["field"] for e in problem["errors"]} == {
        "message",
        "variants[0].message",
        "variants[1].name",
        "variants[2].language_codes[0]",
    }
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendMessage(
                pb.SendMessageRequest(
                    user_ids=[1],
                    variants=[
                        pb.Variant(name="en", message="Hi", language_codes=["en"]),
                        pb.Variant(name="de", message="Hallo", language_codes=["de"]),
                    ],
                ),
                metadata=stack.metadata,
            )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "needs a variant without language_codes" in bad_request(caught.value)["variants"]


@on_sqlite
async def test_variants_over_grpc_replay_preview_and_refuse_an_edit(
    stack: Stack, simulator: Simulator
) -> None:
    request = pb.SendMessageRequest(
        user_ids=[9401, 9402],
        idempotency_key="variants-once",
        variants=[
            pb.Variant(name="a", message="Hello {first_name|friend}"),
            pb.Variant(name="b", message="Hi {first_name|friend}", weight=2),
        ],
        personalize=True,
    )
    async with stack.stub() as stub:
        first = await stub.SendMessage(request, metadata=stack.metadata)
        again = await stub.SendMessage(request, metadata=stack.metadata)
        assert (again.broadcast_id, again.replayed) == (first.broadcast_id, True)
        changed = pb.SendMessageRequest()
        changed.CopyFrom(request)
        changed.variants[1].message = "Hey"
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await stub.SendMessage(changed, metadata=stack.metadata)
        assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
        preview = await stub.PreviewMessage(
            pb.PreviewMessageRequest(message=request, user_id=9401, variant="B"),
            metadata=stack.metadata,
        )
        assert (preview.variant, preview.text) == ("b", "Hi friend")
        with pytest.raises(grpc.aio.AioRpcError) as undecided:
            await stub.PreviewMessage(
                pb.PreviewMessageRequest(message=request, user_id=9401),
                metadata=stack.metadata,
            )
        assert undecided.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "variant" in bad_request(undecided.value)
    await watch(stack, first.broadcast_id)
    texts = sent_texts(simulator)
    assert {texts[9401][1], texts[9402][1]} <= {"Hello friend", "Hi friend"}
    code, problem = await rest(
        stack, "POST", f"/v1/broadcasts/{first.broadcast_id}/edit", {"message": "fixed"}
    )
    assert code == 409, problem
    assert problem["state"] == "variants"
    # A preview names a message or a stored broadcast, not both (either transport).
    both = {"message": {"message": "x"}, "broadcast_id": first.broadcast_id, "user_id": 9401}
    code, problem = await rest(stack, "POST", "/v1/preview", both)
    assert (code, [e["field"] for e in problem["errors"]]) == (400, ["message"])
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as twice:
            await stub.PreviewMessage(
                pb.PreviewMessageRequest(
                    message=request, broadcast_id=first.broadcast_id, user_id=9401
                ),
                metadata=stack.metadata,
            )
    assert "message" in bad_request(twice.value)


async def stack_store_file_id(stack: Stack, broadcast_id: int, *, variant: int) -> str | None:
    """The file_id the service keeps for a variant's media."""
    async with Store.open(stack.settings.database.url) as store:
        return await store.media_file_id(broadcast_id, 1, variant)
