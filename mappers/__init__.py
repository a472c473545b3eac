"""carebridge: mappers package."""
