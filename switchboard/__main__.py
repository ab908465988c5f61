"""`python -m switchboard` is the `switchboard` command."""

from switchboard.supervisor.cli import main

raise SystemExit(main())
