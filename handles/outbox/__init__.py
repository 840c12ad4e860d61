"""The outbox: the HandleRequests the services record, carried to the Handle server by the worker.

- `handover`: hands requests (and job slices) to the task queue; the one module that calls `async_task`.
- `claims`: a worker takes a request, or a batch of them, under a lease and in per-handle order.
- `push`: brings the server to the handle's current state through the one client and reads it back.
- `finish`: records what a push achieved, with backoff, and hands each handle's next request over.
- `drain`: what a queue task does: its own request, then other due ones in batches, then settles jobs.
- `sweep`: the minute's safety net: crashed workers' requests, lost hand-overs, due probes, stalled jobs.
- `pause`: what the worker learns of a prefix's server: the last contact, and the pause (and probe)
  while the server refuses our credentials.

The task functions django-q2 runs (`handles.tasks`) call `drain`, `sweep` and the probe in `pause`; the
services use `handover` to queue what they record. The outbox never imports the services.
"""
