"""The `regtrain` command line: `up`, `api`, `worker`, `train` (main.py) and the commands that talk
to a running server through regtrain_client (client_commands.py)."""

from service.cli.main import main

__all__ = ["main"]
