"""``python -m server``: the API only (same as ``tgbroadcast server``)."""

import sys

from server.cli import main

sys.exit(main(sys.argv[1:] or ["server"], default_command="server"))
