"""Placeholder package: see ARCHITECTURE.md for what will live here."""
