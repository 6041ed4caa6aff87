"""The training engine: a validated JobSpec in, a trained, regularized model out.

It knows nothing of HTTP or Celery: callers pass callbacks (on_epoch, on_checkpoint,
should_stop) and get a JobOutcome or a TrainingError back. Entry point: runner.run_job.
"""
