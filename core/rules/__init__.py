"""Request rules, pure functions over domain values: what both transports accept and how it
is refused.

* :mod:`.validation` — a request's fields, one message per rule, with field paths.
* :mod:`.edits` — an EditBroadcast request, checked against the broadcast it edits.
* :mod:`.rich_content` — Telegram's rules for media, albums, keyboards, copies and forwards.
* :mod:`.formatting` — Telegram's markup (HTML, MarkdownV2), parsed as the Bot API parses it.
  The parsers are :mod:`.html_markup` and :mod:`.markdown_markup`; what they produce is
  :mod:`.parsed_text`.
* :mod:`.templates` — ``{first_name}`` personalization.
* :mod:`.idempotency` — the request hash behind ``idempotency_key``.
* :mod:`.schedule` — ``send_at`` and RFC 3339 timestamps.
* :mod:`.page_tokens` — the opaque cursors of paginated lists.
* :mod:`.bot_names` — a bot's name in a request.
* :mod:`.callback_urls` — what a webhook's ``callback_url`` may be; :mod:`.addresses` — the
  internal addresses a webhook never reaches, in every spelling.

May import: :mod:`tgbroadcast.core.domain`. No I/O.
"""
