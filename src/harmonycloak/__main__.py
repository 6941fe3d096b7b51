"""``python -m harmonycloak`` runs the command line."""

from harmonycloak.cli.app import run

run()
