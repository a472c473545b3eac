"""Authentication (OAuth 2.0 client credentials, JWT) and authorization (SMART v2 scopes + roles)."""
