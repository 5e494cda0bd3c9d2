//! Domain newtypes: values are parsed once at the edge ("parse, don't
//! validate") so the rest of the service only sees valid ones.

pub mod email;
pub mod password;
pub mod secret;

pub use email::Email;
pub use password::{Password, PasswordError};
pub use secret::{hash_secret, random_id, random_secret, Secret};
