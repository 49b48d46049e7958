//! The shape domain: what a shape is (definition, handle, offsets), its
//! where clause, how its rows and changes are encoded on the wire, and its
//! log.

pub mod convert;
pub mod definition;
pub mod encode;
#[cfg(test)]
mod interleave_tests;
pub mod json;
pub mod log;
pub mod materializer;
pub mod nested;
pub mod offset;
pub mod registry;
mod relation_index;
#[cfg(test)]
mod relation_tests;
pub mod schema;
#[cfg(test)]
mod snapshot_filter_tests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod unload_tests;
pub mod where_clause;
