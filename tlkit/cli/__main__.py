"""``python -m tlkit.cli``: the same as the ``tlkit`` console script."""

from tlkit.cli.entry import main

main()
