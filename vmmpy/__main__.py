"""python -m vmmpy"""

import sys

from vmmpy.cli import main

sys.exit(main())
