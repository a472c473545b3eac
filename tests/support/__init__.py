"""Test and benchmark support code (not shipped with the carebridge package)."""
