"""What talks to the outside: sources and manifests, the HTTP client and its SSRF guard,
object stores, Parquet sinks and resume."""
