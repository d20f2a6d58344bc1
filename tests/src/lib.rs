//! Helpers shared by the end-to-end tests: locating binaries and committed fixtures.
