"""Where things are: the checkout, its source tree, this support package."""

from pathlib import Path

#: The support package's own directory (``tests/support``).
SUPPORT_DIR = Path(__file__).resolve().parent
#: The checkout's root (``pyproject.toml`` is there).
ROOT = SUPPORT_DIR.parents[1]
#: The source tree (``src``), which holds the ``ringline`` package.
SRC = ROOT / "src"
#: The examples the docs point to.
EXAMPLES = ROOT / "examples"
