"""``python -m nextstat``: the command line (:mod:`nextstat.cli`)."""

from nextstat.cli import main

main()
