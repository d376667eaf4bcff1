"""The broadcast domain: frozen values (:mod:`.model`, :mod:`.content`), a broadcast's states
and the moves between them (:mod:`.states`), every error the service raises on purpose
(:mod:`.errors`), and what an API token may be granted (:mod:`.access`).

May import: the standard library only (and other modules of this package).
"""
