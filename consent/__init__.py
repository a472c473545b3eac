"""carebridge: consent package."""
