"""``python -m toolkit``: the command line (see ``toolkit.cli.main``)."""

from toolkit.cli import main

raise SystemExit(main())
