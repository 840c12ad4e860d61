from django.apps import AppConfig


class SimulatorConfig(AppConfig):
    """Only the management commands `handle_simulator` and `handle_simulator_fault`: no models, no URLs.
    Installed in development (HANDLES_DEV) and by the test settings, never in production."""

    name = "handles.simulator"
    label = "handles_simulator"
    verbose_name = "Handle server simulator"
