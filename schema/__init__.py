"""SQL migrations (NNN_*.sql) and named queries; shipped as package data."""
