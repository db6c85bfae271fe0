"""``python -m osteo_node`` = the ``osteo-node`` command."""

from osteo_node.cli.main import entry

entry()
