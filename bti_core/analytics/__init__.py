"""Read models for the Risk Queries page and its reports (queries only; never a write)."""
