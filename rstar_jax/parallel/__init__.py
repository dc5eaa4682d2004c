"""Device mesh ('data', 'fsdp', 'tensor'), logical-axis rules and sharding helpers (DESIGN.md principle 3)."""
