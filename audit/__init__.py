"""carebridge: audit package."""
