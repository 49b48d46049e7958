//! Postgres bytes live here and nowhere else: the wire client, connection
//! strings and pgoutput decoding.

pub mod conn;
pub mod connstr;
pub mod error;
pub mod pgoutput;
