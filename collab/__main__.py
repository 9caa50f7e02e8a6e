"""`python -m collab` is the `collab` command."""

from collab.cli import main

raise SystemExit(main())
