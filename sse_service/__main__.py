"""``python -m sse_service`` is the ``sse-service`` command."""

from sse_service.cli import main

raise SystemExit(main())
