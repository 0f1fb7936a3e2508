"""PostgreSQL helpers: DSNs, local clusters, client tools, catalog introspection and COPY."""
