//! The management center (LiveSky §2 "System Management"): SN registry and membership, TOML config
//! turned into incremental per-SN XML pushes, the durable report/log store, and the NOC's HTTP API
//! and dashboard. Not built yet: see the management center issue.
