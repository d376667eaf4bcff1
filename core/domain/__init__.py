"""The broadcast domain: frozen values (:mod:`.model`, :mod:`.content`), a broadcast's states
and the moves between them (:mod:`.states`), every error the service raises on purpose
(:mod:`.errors`), what an API token may be granted (:mod:`.access`), the bots
stored through the API (:mod:`.bots`), and a broadcast's recipient ids held 8 bytes each
(:mod:`.recipients`).

May import: the standard library only (and other modules of this package).
"""
