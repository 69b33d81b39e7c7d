"""``python -m nas_warmstart`` is the ``nas-warmstart`` command."""

from ._cli import main

raise SystemExit(main())
