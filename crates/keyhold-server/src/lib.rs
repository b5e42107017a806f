//! The Keyhold server: reads the configuration, opens storage and the root
//! of trust, and serves the XKS API over HTTPS (TLS 1.2/1.3 with the XKS
//! specification's cipher suites, optionally mutual TLS) or, only when the
//! operator asks for it explicitly, plain HTTP for local testing.

pub mod admin_api;
pub mod admin_ops;
pub mod admin_v1;
pub mod audit;
pub mod azure;
pub mod config;
pub mod conn;
pub mod console;
pub mod data_dir;
pub mod hyok;
pub mod metrics;
pub mod presence;
pub mod serve;
pub mod tls;

pub use config::Config;
pub use data_dir::DataDir;
