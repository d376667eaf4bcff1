"""The broadcast domain: frozen values (:mod:`.model`, :mod:`.content`), a broadcast's states
and the moves between them (:mod:`.states`), every error the service raises on purpose
(:mod:`.errors`), what an API token may be granted (:mod:`.access`), and the bots
stored through the API (:mod:`.bots`).

May import: the standard library only (and other modules of this package).
"""
