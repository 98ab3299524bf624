"""The core of fssbench: contracts, episodes and manifests, loading, metrics, the run loop and session,
run records, journal and results store. It imports nothing above it (adapters, protocols, reports,
registry, cli)."""
