"""carebridge: common package."""
