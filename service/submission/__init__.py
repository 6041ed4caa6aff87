"""Admitting work: check a JobSpec or SweepSpec against its data and the tenant's caps, record it in
the store and ring the broker. Used by the API's routes and by the sweep task (its retrain job), so
it raises domain errors (service.contract.errors), never HTTP ones."""
