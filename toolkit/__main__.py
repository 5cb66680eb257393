"""``python -m toolkit``: the command line (see ``toolkit.cli``)."""

from toolkit.cli import main

raise SystemExit(main())
