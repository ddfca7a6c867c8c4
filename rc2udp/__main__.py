"""``python -m rc2udp``: the same as the ``rc2udp`` command."""

from .cli import main

main()
