"""``python -m webui_insights.cli``, as ``python -m webui_insights``."""

import sys

from .entry import main

sys.exit(main())
