"""`python -m utils.segment SOURCE --out DIR`: the production job's command.

Its code lives with the other commands, in `utils.tools.segment`.
"""

import sys

from utils.tools.segment import main

if __name__ == "__main__":
    sys.exit(main())
