"""Reusable test helpers (fault-injecting HTTP server)."""
