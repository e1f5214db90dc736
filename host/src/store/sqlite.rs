//! The embedded default store: SQLite in WAL mode with group commit.
