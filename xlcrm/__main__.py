"""`python -m xlcrm` runs the command line (the same as the `xlcrm` script)."""

from xlcrm.cli import main

main()
