//! The leaf layer: small types that any module may use and that use nothing else of the crate.

pub mod disk;
pub mod net;
pub mod secret;
pub mod settings;
pub mod typed;
pub mod units;

pub use net::{IpNet, IpNetError};
pub use secret::Secret;
pub use units::{UnitError, format_duration, parse_duration, parse_size};
