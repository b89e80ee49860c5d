"""python -m keyhealth_cli: the same as the `keyhealth` command."""

import sys

from keyhealth_cli.main import main

sys.exit(main())
