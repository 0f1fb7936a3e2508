"""Test configuration: fixtures live in tests/fixtures/ as plugin modules."""

pytest_plugins = [
    "fixtures.pg",
    "fixtures.s3",
    "fixtures.prefect",
    "fixtures.world",
    "fakes.supabase_server",
    "fakes.neon_server",
]
