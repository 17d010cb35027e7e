"""Business records: SQLModel tables, the engine and repository functions."""

from bti_core.db.engine import make_engine, migrate, session_scope

__all__ = ["make_engine", "migrate", "session_scope"]
