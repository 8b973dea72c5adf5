//! latchkey-verify's integration suite: one binary (STYLE.md: one integration-test
//! binary), a module per concern.

// Tests fail by panicking: unwrap, expect and panic are the assertion style here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accepted;
mod feed;
mod forged;
mod fuzz_smoke;
mod fuzz_target;
mod jwks;
mod layer;
mod properties;
mod support;
