//! The Postgres types a `where` clause is typed with: names, categories and
//! the implicit casts that drive operator resolution (a subset of
//! `pg_type` / `pg_cast` restricted to what we can evaluate).

use std::fmt;
use std::sync::Arc;

/// A non-array type. `Unknown` is the type of a string literal, a parameter
/// or `NULL` before context gives it one, as in Postgres.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scalar {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Varchar,
    Bpchar,
    Name,
    Uuid,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Jsonb,
    Bytea,
    /// A user enum, by type name. Only castable to text.
    Enum(Arc<str>),
    /// A column type we cannot evaluate: only `IS [NOT] NULL` works on it.
    Other(Arc<str>),
    Unknown,
}

/// Postgres type categories (`pg_type.typcategory`), used by overload
/// resolution exactly as Postgres uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    Boolean,
    Numeric,
    String,
    Datetime,
    Timespan,
    User,
    Enum,
    Array,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Type {
    pub scalar: Scalar,
    /// Postgres arrays of any dimension share one type.
    pub array: bool,
}

impl Type {
    pub const fn scalar(scalar: Scalar) -> Type {
        Type {
            scalar,
            array: false,
        }
    }

    #[cfg(test)]
    pub const fn array_of(scalar: Scalar) -> Type {
        Type {
            scalar,
            array: true,
        }
    }

    pub const BOOL: Type = Type::scalar(Scalar::Bool);
    pub const INT4: Type = Type::scalar(Scalar::Int4);
    pub const TEXT: Type = Type::scalar(Scalar::Text);
    pub const UNKNOWN: Type = Type::scalar(Scalar::Unknown);

    pub fn is_unknown(&self) -> bool {
        !self.array && self.scalar == Scalar::Unknown
    }

    pub fn element(&self) -> Type {
        Type::scalar(self.scalar.clone())
    }

    pub fn category(&self) -> Category {
        if self.array {
            Category::Array
        } else {
            self.scalar.category()
        }
    }

    pub fn is_preferred(&self) -> bool {
        !self.array && self.scalar.is_preferred()
    }

    /// SQL spelling for casts in rendered SQL (`int4`, `text[]`, `"my enum"`).
    pub fn sql_name(&self) -> String {
        let base = match &self.scalar {
            Scalar::Enum(name) | Scalar::Other(name) => quote_identifier(name),
            other => other.name().to_string(),
        };
        if self.array {
            format!("{base}[]")
        } else {
            base
        }
    }
}

/// Electric's `readable/1` spelling, used in error messages.
impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scalar {
            Scalar::Enum(name) => write!(f, "enum {name}")?,
            other => f.write_str(other.name())?,
        }
        if self.array {
            f.write_str("[]")?;
        }
        Ok(())
    }
}

impl Scalar {
    pub fn name(&self) -> &str {
        match self {
            Scalar::Bool => "bool",
            Scalar::Int2 => "int2",
            Scalar::Int4 => "int4",
            Scalar::Int8 => "int8",
            Scalar::Float4 => "float4",
            Scalar::Float8 => "float8",
            Scalar::Numeric => "numeric",
            Scalar::Text => "text",
            Scalar::Varchar => "varchar",
            Scalar::Bpchar => "bpchar",
            Scalar::Name => "name",
            Scalar::Uuid => "uuid",
            Scalar::Date => "date",
            Scalar::Time => "time",
            Scalar::Timestamp => "timestamp",
            Scalar::Timestamptz => "timestamptz",
            Scalar::Interval => "interval",
            Scalar::Json => "json",
            Scalar::Jsonb => "jsonb",
            Scalar::Bytea => "bytea",
            Scalar::Enum(name) | Scalar::Other(name) => name,
            Scalar::Unknown => "unknown",
        }
    }

    /// A catalog `typname` (as `WhereColumn::type_name` carries it).
    pub fn from_typname(name: &str) -> Option<Scalar> {
        Some(match name {
            "bool" => Scalar::Bool,
            "int2" => Scalar::Int2,
            "int4" => Scalar::Int4,
            "int8" => Scalar::Int8,
            "float4" => Scalar::Float4,
            "float8" => Scalar::Float8,
            "numeric" => Scalar::Numeric,
            "text" => Scalar::Text,
            "varchar" => Scalar::Varchar,
            "bpchar" => Scalar::Bpchar,
            "name" => Scalar::Name,
            "uuid" => Scalar::Uuid,
            "date" => Scalar::Date,
            "time" => Scalar::Time,
            "timestamp" => Scalar::Timestamp,
            "timestamptz" => Scalar::Timestamptz,
            "interval" => Scalar::Interval,
            "json" => Scalar::Json,
            "jsonb" => Scalar::Jsonb,
            "bytea" => Scalar::Bytea,
            _ => return None,
        })
    }

    pub fn category(&self) -> Category {
        match self {
            Scalar::Bool => Category::Boolean,
            Scalar::Int2
            | Scalar::Int4
            | Scalar::Int8
            | Scalar::Float4
            | Scalar::Float8
            | Scalar::Numeric => Category::Numeric,
            Scalar::Text | Scalar::Varchar | Scalar::Bpchar | Scalar::Name => Category::String,
            Scalar::Date | Scalar::Time | Scalar::Timestamp | Scalar::Timestamptz => {
                Category::Datetime
            }
            Scalar::Interval => Category::Timespan,
            Scalar::Enum(_) => Category::Enum,
            Scalar::Unknown => Category::Unknown,
            Scalar::Uuid | Scalar::Json | Scalar::Jsonb | Scalar::Bytea | Scalar::Other(_) => {
                Category::User
            }
        }
    }

    pub fn is_preferred(&self) -> bool {
        matches!(
            self,
            Scalar::Bool | Scalar::Float8 | Scalar::Text | Scalar::Timestamptz | Scalar::Interval
        )
    }

    pub fn is_string(&self) -> bool {
        self.category() == Category::String
    }

    /// Types whose values we parse and compare (everything else is opaque text).
    pub fn is_evaluable(&self) -> bool {
        !matches!(
            self,
            Scalar::Json | Scalar::Jsonb | Scalar::Bytea | Scalar::Enum(_) | Scalar::Other(_)
        )
    }
}

/// `pg_cast` entries with `castcontext = 'i'` among our types.
pub(crate) fn implicitly_castable(from: &Type, to: &Type) -> bool {
    if from == to {
        return true;
    }
    if from.array != to.array {
        return false;
    }
    if from.array {
        // Postgres coerces arrays element-wise where the elements coerce.
        return scalar_implicit(&from.scalar, &to.scalar);
    }
    scalar_implicit(&from.scalar, &to.scalar)
}

fn scalar_implicit(from: &Scalar, to: &Scalar) -> bool {
    use Scalar::*;
    if from == to {
        return true;
    }
    matches!(
        (from, to),
        (Int2, Int4 | Int8 | Float4 | Float8 | Numeric)
            | (Int4, Int8 | Float4 | Float8 | Numeric)
            | (Int8, Float4 | Float8 | Numeric)
            | (Float4, Float8)
            | (Numeric, Float4 | Float8)
            | (Text, Varchar | Bpchar | Name)
            | (Varchar, Text | Bpchar | Name)
            | (Bpchar, Text | Varchar | Name)
            | (Name, Text)
            | (Date, Timestamp | Timestamptz)
            | (Timestamp, Timestamptz)
            | (Time, Interval)
    )
}

/// Casts allowed with `::type` beyond the implicit ones (explicit `pg_cast`
/// entries, text I/O conversions, and casts from enums to text).
pub(crate) fn explicitly_castable(from: &Type, to: &Type) -> bool {
    if implicitly_castable(from, to) {
        return true;
    }
    if from.array != to.array {
        // Arrays print to text and read from it (I/O conversion casts).
        let text_side = if from.array { to } else { from };
        let array_side = if from.array { from } else { to };
        return !text_side.array
            && text_side.scalar.is_string()
            && (from.array || array_side.scalar.is_evaluable());
    }
    let (f, t) = (&from.scalar, &to.scalar);
    if matches!(f, Scalar::Other(_)) || matches!(t, Scalar::Other(_) | Scalar::Enum(_)) {
        return false;
    }
    if t.is_string() {
        // Every type's output function is a cast to text (I/O conversion).
        return true;
    }
    if f.is_string() {
        // ...and every input function a cast from text, for types we parse.
        return t.is_evaluable();
    }
    use Scalar::*;
    matches!(
        (f, t),
        (
            Int2 | Int4 | Int8 | Float4 | Float8 | Numeric,
            Int2 | Int4 | Int8 | Float4 | Float8 | Numeric
        ) | (Bool, Int4)
            | (Int4, Bool)
            | (Timestamp | Timestamptz, Date | Time)
            | (Timestamptz, Timestamp)
            | (Interval, Time)
    )
}

/// Quotes an identifier the way Postgres' `quote_ident` does, so rendered
/// SQL never depends on the case or content of a name.
pub(crate) fn quote_identifier(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Electric's `identifier/1`: plain lower-case names as-is, others quoted.
pub(crate) fn electric_identifier(name: &str) -> String {
    let mut chars = name.chars();
    let plain = match chars.next() {
        Some(c) if c.is_lowercase() || c == '_' => {
            chars.all(|c| c.is_lowercase() || c.is_ascii_digit() || c == '_')
        }
        _ => false,
    };
    if plain {
        name.to_string()
    } else {
        quote_identifier(name)
    }
}

/// Resolves a type name as written in a cast (`integer`, `pg_catalog.int4`,
/// `double precision`, `timestamp with time zone`, an enum's name). `names`
/// are already case-folded; multi-word names arrive joined with a space.
pub(crate) fn resolve_type_name(names: &[String], enums: &[Arc<str>]) -> Option<Scalar> {
    let name = match names {
        [schema, name] if schema == "pg_catalog" => name.as_str(),
        [name] => name.as_str(),
        _ => return None,
    };
    if let Some(scalar) = Scalar::from_typname(name) {
        return Some(scalar);
    }
    let scalar = match name {
        "boolean" => Scalar::Bool,
        "smallint" => Scalar::Int2,
        "int" | "integer" => Scalar::Int4,
        "bigint" => Scalar::Int8,
        "real" => Scalar::Float4,
        "float" | "double precision" => Scalar::Float8,
        "decimal" => Scalar::Numeric,
        "character varying" => Scalar::Varchar,
        "time without time zone" => Scalar::Time,
        "timestamp without time zone" => Scalar::Timestamp,
        "timestamp with time zone" => Scalar::Timestamptz,
        _ => {
            return enums
                .iter()
                .find(|e| e.as_ref() == name)
                .map(|e| Scalar::Enum(e.clone()))
        }
    };
    Some(scalar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clause_types_implicit_casts_follow_pg_cast() {
        let int4 = Type::INT4;
        let int8 = Type::scalar(Scalar::Int8);
        assert!(implicitly_castable(&int4, &int8));
        assert!(!implicitly_castable(&int8, &int4));
        assert!(!implicitly_castable(&int4, &Type::TEXT));
        assert!(implicitly_castable(
            &Type::array_of(Scalar::Int4),
            &Type::array_of(Scalar::Int8)
        ));
        assert!(explicitly_castable(&int4, &Type::TEXT));
        assert!(explicitly_castable(
            &Type::TEXT,
            &Type::scalar(Scalar::Uuid)
        ));
        assert!(!explicitly_castable(&Type::scalar(Scalar::Uuid), &int4));
        let mood = Type::scalar(Scalar::Enum("mood".into()));
        assert!(explicitly_castable(&mood, &Type::TEXT));
        assert!(!explicitly_castable(&Type::TEXT, &mood));
    }

    #[test]
    fn where_clause_types_names_and_identifiers() {
        let enums: Vec<Arc<str>> = vec!["mood".into()];
        assert_eq!(
            resolve_type_name(&["integer".into()], &enums),
            Some(Scalar::Int4)
        );
        assert_eq!(
            resolve_type_name(&["pg_catalog".into(), "int8".into()], &enums),
            Some(Scalar::Int8)
        );
        assert_eq!(
            resolve_type_name(&["timestamp with time zone".into()], &enums),
            Some(Scalar::Timestamptz)
        );
        assert_eq!(
            resolve_type_name(&["mood".into()], &enums),
            Some(Scalar::Enum("mood".into()))
        );
        assert_eq!(resolve_type_name(&["point".into()], &enums), None);
        assert_eq!(electric_identifier("foo_1"), "foo_1");
        assert_eq!(electric_identifier("Foo"), "\"Foo\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
        assert_eq!(Type::array_of(Scalar::Int4).to_string(), "int4[]");
    }
}
