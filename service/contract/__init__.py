"""The contract: what a client may ask for (JobSpec, SweepSpec, search spaces), the torch-free model
planner, which trials stack and which one wins, and the domain errors. Imports pydantic and numpy,
never the store, the queue, the API or torch."""
