"""``python -m webui_insights`` is the ``webui-insights`` command."""

import sys

from .cli import main

sys.exit(main())
