"""``python -m mixin [ROOT]``: write the rules, their tests and the dashboards under ROOT."""

from __future__ import annotations

import sys
from pathlib import Path

from mixin.generate import write_all

if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    for path in write_all(root):
        print(path)
