"""The ``harmonycloak`` command line (Typer + rich): one module per command group."""
