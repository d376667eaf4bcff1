"""Rich content kept by the store as it was validated, and the profiles that fill a
personalized message: on every backend."""

from __future__ import annotations

from tests.fixtures.content import PHOTO, keyboard
from tgbroadcast.core.domain.content import (
    ContentOptions,
    Entity,
    InlineButton,
    LinkPreview,
    MessageRef,
)
from tgbroadcast.core.domain.model import Content, MediaType, NewBroadcast, UserProfile
from tgbroadcast.core.rules.rich_content import AlbumItemInput
from tgbroadcast.core.rules.validation import SendRequest, validate_send
from tgbroadcast.core.store import Store


async def test_rich_options_survive_the_store(database_url: str) -> None:
    options = ContentOptions(
        parse_mode=None,
        entities=(
            Entity(type="text_mention", offset=0, length=2, user_id=42),
            Entity(type="date_time", offset=3, length=5, unix_time=0, date_time_format="wDT"),
        ),
        reply_markup=keyboard([InlineButton(text="Ünïcode", url="tg://resolve?domain=x")]),
        disable_notification=True,
        protect_content=True,
        link_preview=LinkPreview(url="https://example.com", show_above_text=True),
    )
    new = validate_send(
        SendRequest(
            message="hi there",
            entities=options.entities,
            reply_markup=options.reply_markup,
            disable_notification=True,
            protect_content=True,
            link_preview_options=options.link_preview,
            user_ids=[5],
        ),
        max_user_ids=10,
    )
    copy = validate_send(
        SendRequest(
            media_type="copy",
            message="<i>new</i>",
            parse_mode="html",
            source=MessageRef(from_chat_id=-1001234567890, message_id=77),
            user_ids=[5],
            personalize=True,
        ),
        max_user_ids=10,
    )
    albums = validate_send(
        SendRequest(
            media_type="album",
            album=[
                AlbumItemInput(
                    media_type="photo", media_url=PHOTO, caption="one", has_spoiler=True
                ),
                AlbumItemInput(media_type="video", media_data=b"v", media_filename="v.mp4"),
            ],
            user_ids=[5],
        ),
        max_user_ids=10,
    )
    async with Store.open(database_url) as store:
        await store.migrate()
        for created in (new, copy, albums):
            stored = await store.create_broadcast(created)
            assert (await store.get_broadcast(stored.id)).content == created.content
        plain = await store.create_broadcast(
            NewBroadcast(content=Content(message="p"), user_ids=(5,))
        )
        assert (await store.get_broadcast(plain.id)).content.options == ContentOptions()
    assert new.content.options == options
    assert copy.content.media_type is MediaType.COPY


async def test_profiles_are_read_in_one_call(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        await store.upsert_users(
            [
                UserProfile(id=1, first_name="Ann", last_name="Lee", username="ann"),
                UserProfile(id=-100200, first_name="Group"),
                UserProfile(id=3, language_code="de"),
            ]
        )
        found = await store.profiles([3, 1, 999, -100200, 1])
        assert set(found) == {1, 3, -100200}
        assert (found[1].first_name, found[1].last_name, found[1].username) == ("Ann", "Lee", "ann")
        assert found[3].first_name is None
        assert found[3].language_code == "de"
        assert await store.profiles([]) == {}
        many = await store.profiles(list(range(-600, 600)))
        assert set(many) == {1, 3}
