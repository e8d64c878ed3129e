"""Local emulators of vendor APIs (127.0.0.1 only), for tests and benchmarks."""
