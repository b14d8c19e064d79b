"""ppox's benchmarks: scripts (``python benchmarks/<name>.py``), their harness, peers, results."""

import os
import sys
from pathlib import Path

# Make `import ppox` work when a script is run from a checkout that is not pip-installed
# (the venv normally has ppox installed in editable mode).
_SRC = Path(__file__).resolve().parent.parent / "src"
if str(_SRC) not in sys.path and not os.environ.get("PPOX_NO_SRC_PATH"):
    sys.path.append(str(_SRC))
