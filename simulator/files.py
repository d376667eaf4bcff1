"""Files the simulated Telegram stores: minting file_ids and the media objects of messages.

Guarantees, as on api.telegram.org:

* a file_id belongs to the bot that received it; another bot's file_id, or any string this
  simulator did not issue, is unknown;
* a file sent by file_id is the same file (same ``file_unique_id``, same media object);
* every photo has several sizes, each with its own file_id, and any of them resends the photo;
* a file_id of one kind does not send another kind (a photo is never a video);
* a photo uploaded is at most 10 MB (:data:`PHOTO_UPLOAD_LIMIT`; any file at most the
  request's 50 MB, :mod:`.server`).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit


class FileKind(enum.StrEnum):
    """The kinds of file a message can carry; the value is the Message field's name."""

    PHOTO = "photo"
    VIDEO = "video"
    ANIMATION = "animation"
    DOCUMENT = "document"
    AUDIO = "audio"
    VOICE = "voice"
    VIDEO_NOTE = "video_note"
    STICKER = "sticker"

    @property
    def tdlib_name(self) -> str:
        """The name TDLib uses in its errors (``can't use file of type VoiceNote as Audio``)."""
        return _TDLIB_NAMES[self]


_TDLIB_NAMES = {
    FileKind.PHOTO: "Photo",
    FileKind.VIDEO: "Video",
    FileKind.ANIMATION: "Animation",
    FileKind.DOCUMENT: "Document",
    FileKind.AUDIO: "Audio",
    FileKind.VOICE: "VoiceNote",
    FileKind.VIDEO_NOTE: "VideoNote",
    FileKind.STICKER: "Sticker",
}

# The first byte of a real file_id is its TDLib file type; it is why photo ids start "Ag".
_TYPE_BYTES = {
    FileKind.PHOTO: 2,
    FileKind.VOICE: 3,
    FileKind.VIDEO: 4,
    FileKind.DOCUMENT: 5,
    FileKind.STICKER: 8,
    FileKind.AUDIO: 9,
    FileKind.ANIMATION: 10,
    FileKind.VIDEO_NOTE: 13,
}

_DEFAULT_NAMES = {
    FileKind.VIDEO: ("video.mp4", "video/mp4"),
    FileKind.ANIMATION: ("animation.gif.mp4", "video/mp4"),
    FileKind.DOCUMENT: ("document.pdf", "application/pdf"),
    FileKind.AUDIO: ("audio.mp3", "audio/mpeg"),
    FileKind.VOICE: ("voice.ogg", "audio/ogg"),
}

# (width, height) of the sizes Telegram keeps of a photo: s, m, x, y.
_PHOTO_SIZES = ((90, 67), (320, 240), (800, 600), (1280, 960))


PHOTO_UPLOAD_LIMIT: Final = 10 * 1024 * 1024
"""Bytes Telegram takes in a photo a bot uploads (other files: the request's 50 MB)."""
PHOTO_TOO_BIG: Final = "PHOTO_SAVE_FILE_INVALID"
"""How Telegram refuses a bigger photo: its own error's name after "Bad Request: " (as clients
report it), not one of the Bot API server's sentences."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Upload:
    """A file part of a multipart request. The simulator keeps its digest, not its bytes."""

    filename: str
    content_type: str
    size: int
    sha256: str

    def describe(self) -> dict[str, Any]:
        """How the upload appears in recorded parameters."""
        return {"upload": self.filename, "size": self.size, "content_type": self.content_type}


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredFile:
    """One file of one bot. ``media`` is the Message field's value (a list for photos)."""

    kind: FileKind
    bot_id: int
    file_id: str
    file_unique_id: str
    media: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSource:
    """Where a new file comes from: ``key`` identifies its content (a URL or a digest)."""

    key: str
    size: int | None = None
    filename: str | None = None
    mime_type: str | None = None

    @classmethod
    def from_url(cls, url: str) -> FileSource:
        name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or None
        return cls(key=f"url:{url}", filename=name)

    @classmethod
    def from_upload(cls, upload: Upload) -> FileSource:
        mime = upload.content_type if upload.content_type != "application/octet-stream" else None
        return cls(
            key=f"sha256:{upload.sha256}",
            size=upload.size,
            filename=upload.filename,
            mime_type=mime,
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class FileStore:
    """Every file minted so far, by file_id. Not thread-safe: one event loop owns it."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._serial = 0

    def __len__(self) -> int:
        return len(self._files)

    def clear(self) -> None:
        self._files.clear()

    def lookup(self, file_id: str, *, bot_id: int) -> StoredFile | None:
        """The file behind ``file_id`` if this simulator issued it to ``bot_id``."""
        stored = self._files.get(file_id)
        if stored is None or stored.bot_id != bot_id:
            return None
        return stored

    def mint(
        self,
        *,
        bot_id: int,
        kind: FileKind,
        source: FileSource,
        params: Mapping[str, Any],
    ) -> StoredFile:
        """A new file (new file_ids) for ``source``; ``params`` may set sizes and titles.

        The same content (URL or uploaded bytes) gets the same ``file_unique_id``, as on
        Telegram, but every mint issues fresh file_ids.
        """
        digest = hashlib.sha256(f"{kind}|{source.key}".encode()).digest()
        size = source.size if source.size is not None else 10_000 + digest[0] * 4_000
        if kind is FileKind.PHOTO:
            photo = [
                self._photo_size(bot_id, digest, index, width, height, size)
                for index, (width, height) in enumerate(_PHOTO_SIZES)
            ]
            stored = StoredFile(
                kind=kind,
                bot_id=bot_id,
                file_id=photo[-1]["file_id"],
                file_unique_id=photo[-1]["file_unique_id"],
                media=photo,
            )
            for item in photo:
                self._files[item["file_id"]] = stored
            return stored
        file_id = self._file_id(kind, bot_id)
        unique_id = self._unique_id(kind, digest, 0)
        media = self._media(kind, file_id, unique_id, source, size, params, bot_id, digest)
        stored = StoredFile(
            kind=kind, bot_id=bot_id, file_id=file_id, file_unique_id=unique_id, media=media
        )
        self._files[file_id] = stored
        return stored

    def _file_id(self, kind: FileKind, bot_id: int) -> str:
        self._serial += 1
        header = bytes((_TYPE_BYTES[kind], 0, 2, 0))
        raw = header + struct.pack("<QQ", bot_id, self._serial) + secrets.token_bytes(40)
        return _b64(raw)

    @staticmethod
    def _unique_id(kind: FileKind, digest: bytes, index: int) -> str:
        return _b64(bytes((1, 0, _TYPE_BYTES[kind], index)) + digest[1:13])

    def _photo_size(
        self, bot_id: int, digest: bytes, index: int, width: int, height: int, size: int
    ) -> dict[str, Any]:
        share = (index + 1) / len(_PHOTO_SIZES)
        return {
            "file_id": self._file_id(FileKind.PHOTO, bot_id),
            "file_unique_id": self._unique_id(FileKind.PHOTO, digest, index),
            "file_size": max(100, int(size * share * share)),
            "width": width,
            "height": height,
        }

    def _thumbnail(self, bot_id: int, digest: bytes, width: int, height: int) -> dict[str, Any]:
        return {
            "file_id": self._file_id(FileKind.PHOTO, bot_id),
            "file_unique_id": self._unique_id(FileKind.PHOTO, digest, 9),
            "file_size": 1_000 + digest[2] * 10,
            "width": width,
            "height": height,
        }

    def _media(
        self,
        kind: FileKind,
        file_id: str,
        unique_id: str,
        source: FileSource,
        size: int,
        params: Mapping[str, Any],
        bot_id: int,
        digest: bytes,
    ) -> dict[str, Any]:
        def number(name: str, default: int) -> int:
            value = params.get(name)
            return value if isinstance(value, int) else default

        base: dict[str, Any] = {"file_id": file_id, "file_unique_id": unique_id}
        default_name, default_mime = _DEFAULT_NAMES.get(kind, (None, None))
        named = {
            "file_name": source.filename or default_name,
            "mime_type": source.mime_type or default_mime,
        }
        duration = number("duration", 5 + digest[3] % 60)
        if kind in (FileKind.VIDEO, FileKind.ANIMATION):
            width, height = number("width", 1280), number("height", 720)
            thumb = self._thumbnail(bot_id, digest, 320, 180)
            return base | {
                "width": width,
                "height": height,
                "duration": duration,
                "thumbnail": thumb,
                **named,
                "file_size": size,
            }
        if kind is FileKind.DOCUMENT:
            return base | named | {"file_size": size}
        if kind is FileKind.AUDIO:
            extra = {name: params[name] for name in ("performer", "title") if name in params}
            return base | {"duration": duration, **extra, **named, "file_size": size}
        if kind is FileKind.VOICE:
            return base | {"duration": duration, "mime_type": named["mime_type"], "file_size": size}
        if kind is FileKind.VIDEO_NOTE:
            thumb = self._thumbnail(bot_id, digest, 240, 240)
            return base | {
                "length": number("length", 240),
                "duration": duration,
                "thumbnail": thumb,
                "file_size": size,
            }
        emoji = params.get("emoji")
        return base | {
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            **({"emoji": emoji} if isinstance(emoji, str) else {}),
            "file_size": size,
        }
