"""``python -m tunelab.cli`` (the app's Runs tab and the tests start the command this way)."""

import sys

from tunelab.cli import main

sys.exit(main())
