"""carebridge: crm_bridge package."""
