"""``python -m llmcache``: the ``llmcache`` command line."""

from llmcache.cli import main

raise SystemExit(main())
