"""Exit 0 if every requirement given on the command line is installed, else 1 (used by make deps)."""

from __future__ import annotations

import sys
from importlib import metadata


def satisfied(req: str) -> bool:
    name, _, version = req.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return not version or have == version


if __name__ == "__main__":
    missing = [r for r in sys.argv[1:] if not satisfied(r)]
    if missing:
        print("==> installing Python packages:", " ".join(missing))
    sys.exit(1 if missing else 0)
