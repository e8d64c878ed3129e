"""Reports over an audit's Parquet tables (DuckDB), as JSON or one self-contained HTML file."""
