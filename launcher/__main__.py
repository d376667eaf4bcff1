"""``python -m tgbroadcast.launcher COMMAND``: the same as the ``tgbroadcast`` command."""

import sys

from tgbroadcast.launcher.cli import main

sys.exit(main())
