"""What every script under experiments/ runs its `main` through: an `ExportError` (bad input) is
printed as `error: ...` on stderr and exits 2; anything else is a bug and keeps its traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable


def run(main: Callable[[], object]) -> None:
    from .errors import ExportError

    try:
        main()
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
