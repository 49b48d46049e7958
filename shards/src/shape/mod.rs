pub mod where_clause;
