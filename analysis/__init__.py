"""Tables and plots from MLflow runs (see the open analysis issue)."""
