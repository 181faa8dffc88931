"""Worker heartbeats, health and readiness, metrics and logging."""
