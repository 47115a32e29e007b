"""``python -m vireid ...`` is the ``vireid`` command."""

from vireid.cli import main

main()
