"""Admin pages of imports, reconciliation, repairs, health checks and assets with several handles.

Thin: each view parses a form, calls handles.repair.services (or handles.services) and shows the result.
Long jobs run on the task queue; their pages poll a JSON status view and draw a progress bar. Staff
(handles.change_handle) start jobs and apply changes; collection managers may look.

One module per kind of job (imports, reconciliation, health) and what they share (common); importing
this package registers them all.
"""

from handles.repair.admin import common, health, imports, reconciliation  # noqa: F401 (each registers its pages)
