"""`python -m tengine ...` is the `tengine` command."""

import sys

from tengine.cli import main

sys.exit(main())
