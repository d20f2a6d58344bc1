//! Generated gRPC code for package `asrl.v1`.
