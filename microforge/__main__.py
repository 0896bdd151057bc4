import sys

from microforge.platform.cli import main

sys.exit(main())
