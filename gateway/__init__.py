"""carebridge: gateway package."""
