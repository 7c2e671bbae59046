"""``python -m orchestrator.cli``: the ``moesaic`` command."""

from orchestrator.cli.main import main

main()
