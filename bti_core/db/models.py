"""SQLModel tables. Each table has a migration under ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from bti_core.db.types import UTCDateTime, utcnow


class IngestRunBase(SQLModel):
    source: str = Field(max_length=500, description="file path, exchange id or 'demo seed=N'")
    symbol: str = Field(max_length=40, index=True)
    kind: str = Field(max_length=16)
    timeframe: str = Field(max_length=8)
    rows_in: int = Field(ge=0)
    rows_stored: int = Field(ge=0, description="rows kept by cleaning")
    rows_added: int = Field(ge=0, description="times not stored before")
    rows_updated: int = Field(ge=0, description="stored times whose values changed")
    rows_total: int = Field(ge=0, description="rows in the warehouse file after the run")
    first_ts: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_ts: datetime | None = Field(default=None, sa_type=UTCDateTime)


class IngestRun(IngestRunBase, table=True):
    """One import of one file or download into the warehouse, with its cleaning report."""

    __tablename__ = "ingest_run"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
