"""regtrain's server side, in rooms named for layers (docs/ARCHITECTURE.md): contract, data, store,
queue, notify, submission, api and cli. The worker and its engine live in worker/."""
