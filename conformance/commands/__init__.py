"""One module per ``qmp-conformance`` subcommand, each with ``add_arguments`` and ``main``."""
