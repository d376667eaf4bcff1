"""``python -m worker``: one worker (same as ``tgbroadcast worker``)."""

import sys

from server.cli import main

sys.exit(main(sys.argv[1:] or ["worker"], default_command="worker"))
