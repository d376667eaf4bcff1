"""The send path: jobs from NATS, messages to Telegram within its limits, outcomes to SQL.

* :mod:`.runner` — a worker with everything it owns, as one async context manager.
* :mod:`.lanes` — a lane per bot (its client, budget, slots and consumers), following the
  bots as they are created and deleted.
* :mod:`.worker` — one bot's fetch loop: jobs by tier, claims, backlog.
* :mod:`.claims` — a job's hold on its recipients in SQL.
* :mod:`.delivery` — one recipient from first attempt to final outcome, retries included;
  :mod:`.broadcast_states` — the broadcasts' states it checks before each send.
* :mod:`.aiogram_loading` — aiogram imported with its models built on first use;
  :mod:`.aiogram_models` — those a worker uses, built as it starts.
* :mod:`.telegram`, :mod:`.aiogram_content` — the Telegram client (aiogram's ``Bot``);
  :mod:`.telegram_errors` — its errors mapped into ours; :mod:`.telegram_forms` and
  :mod:`.telegram_answers` — its requests' bodies and its sends' answers, without the parts
  of aiogram's session a send does not need.
* :mod:`.followups` — what recall and edit jobs share: holding sent recipients, one call
  each at a slot of the bot's budget, outcomes recorded in groups.
* :mod:`.recall` — recall jobs: a recalled broadcast's messages deleted, each recipient's
  outcome recorded once.
* :mod:`.edit` — edit jobs: an edited broadcast's messages given its new content.
* :mod:`.parking` — a long flood wait parks the bot: jobs handed back, ``throttled_until``.
* :mod:`.fetching` — files Telegram does not fetch by URL, fetched once for their upload.
* :mod:`.ratelimit`, :mod:`.rate_tier`, :mod:`.chat_pacing`, :mod:`.clock` — the rate
  budget shared by every worker process (one GCRA key per tier), and per-chat pacing.
* :mod:`.recorder` — group commit of outcomes: SQL first, then the events stream.

May import: ``tgbroadcast.core`` (domain, rules, store, queue, config, logs, metrics,
tasks, outbound); never the service, the API transports or the launcher.
"""
