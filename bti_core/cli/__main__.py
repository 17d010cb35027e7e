"""``python -m bti_core.cli`` runs the ``bti`` command."""

from bti_core.cli import app

app()
