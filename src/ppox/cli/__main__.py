import sys

from ppox.cli import main

sys.exit(main())
