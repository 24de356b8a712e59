"""qpart.cli: the operator's `qpart` tool, one module per command group (models, planning, security).

Other packages add command groups through the `qpart.commands` entry point (the harness adds
testbed, bench and demo), so the tool never imports them.
May import: qpart.common, qpart.v1, qpart.server.
"""
