"""The live dashboard in the browser, served by the service at ``/ui/`` on the HTTP port.

``static/`` holds the page itself — plain HTML, CSS and ES modules, no build step and no
Node.js — shipped inside the wheel; :mod:`.routes` serves those files (no token: they carry no
data) under a strict Content-Security-Policy. The page signs in with an API token kept in the
browser tab's ``sessionStorage`` and calls the REST API with it as the ``Authorization``
header, never in a URL or a cookie (docs/ui.md).
"""
