"""Market data: sources, cleaning, the Parquet/DuckDB warehouse and synthetic demo markets."""
