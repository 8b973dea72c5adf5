//! End-to-end tests: each test starts the real `latchkey` binary on its own data
//! directory and drives it over HTTP, like a browser and a client application would.

// Tests fail by panicking: unwrap, expect and panic are the assertion style here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod attacks;
mod flows;
mod grants;
mod keys;
mod logs;
mod multinode;
mod negative;
mod oidc;
mod support;
mod throttling;
mod verify;
