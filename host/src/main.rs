//! The `kefu` command: `kefu gateway`, `kefu user`, `kefu device`.

fn main() {}
