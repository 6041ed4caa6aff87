"""regtrain's API side: the JobSpec contract, the store, the HTTP routes and the CLI."""
