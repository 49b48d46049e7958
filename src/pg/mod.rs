//! Postgres bytes live here and nowhere else: the wire client, connection
//! strings, the replication sub-protocol and pgoutput decoding.

pub mod conn;
pub mod connstr;
pub mod error;
pub mod pgoutput;
pub mod replication;
pub mod sql;
pub mod tls;

/// Value text formats every connection that produces row values uses, so
/// snapshot rows and replicated rows render identically (Electric's display
/// settings). Sent as startup parameters: no extra round trips.
pub const DISPLAY_SETTINGS: [(&str, &str); 5] = [
    ("bytea_output", "hex"),
    ("DateStyle", "ISO, DMY"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("IntervalStyle", "iso_8601"),
];

/// `conn` with the display settings added as startup parameters.
pub fn with_display_settings(conn: &connstr::ConnConfig) -> connstr::ConnConfig {
    let mut conn = conn.clone();
    conn.options.extend(
        DISPLAY_SETTINGS
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    conn
}
