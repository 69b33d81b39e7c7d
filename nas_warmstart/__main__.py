"""``python -m nas_warmstart`` is the ``nas-warmstart`` command."""

from .cli import main

raise SystemExit(main())
