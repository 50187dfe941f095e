//! Column types the engine's own tables share across databases: a UUID, a
//! timestamp and a JSON document, stored natively on PostgreSQL and as text
//! on SQLite. With these, one query text (apart from placeholders) and one
//! binding serve both databases.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

/// A UUID: `uuid` on PostgreSQL, hyphenated text on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id(pub Uuid);

/// A point in time: `timestamptz` on PostgreSQL; on SQLite, RFC 3339 text
/// in UTC with exactly three fractional digits, so that text order is time
/// order (`2026-11-28T09:30:00.000Z`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Time(pub DateTime<Utc>);

/// A JSON document: `jsonb` on PostgreSQL, text on SQLite.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc(pub Value);

impl Time {
    pub fn now() -> Time {
        Time(Utc::now())
    }

    /// The SQLite text form.
    pub fn to_sqlite_text(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

// --- PostgreSQL: delegate to the native types.

impl Type<Postgres> for Id {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Id {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Id {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Id(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Postgres> for Time {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Time {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Time {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Time(<DateTime<Utc> as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Postgres> for Doc {
    fn type_info() -> PgTypeInfo {
        <sqlx::types::Json<Value> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Doc {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <sqlx::types::Json<&Value> as Encode<Postgres>>::encode_by_ref(
            &sqlx::types::Json(&self.0),
            buf,
        )
    }
}

impl<'r> Decode<'r, Postgres> for Doc {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Doc(<sqlx::types::Json<Value> as Decode<Postgres>>::decode(
            value,
        )?
        .0))
    }
}

// --- SQLite: text.

impl Type<Sqlite> for Id {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Id {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.hyphenated().to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Id {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Id(Uuid::parse_str(text)?))
    }
}

impl Type<Sqlite> for Time {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Time {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.to_sqlite_text(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Time {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Time(
            DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc),
        ))
    }
}

impl Type<Sqlite> for Doc {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for Doc {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Doc {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Doc(serde_json::from_str(text)?))
    }
}

/// An event's place in the log: `(xid, seq)`, compared in that order.
///
/// On PostgreSQL `xid` is the id of the transaction that inserted the event
/// and `seq` a sequence; on SQLite `xid` is always 0 (writers are
/// serialised, so `seq` order is commit order). See ARCHITECTURE.md,
/// "Delivery (v2)".
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    pub xid: i64,
    pub seq: i64,
}

impl Position {
    pub const ZERO: Position = Position { xid: 0, seq: 0 };

    pub fn new(xid: i64, seq: i64) -> Position {
        Position { xid, seq }
    }

    /// The last position strictly below `horizon` (a horizon is exclusive).
    pub fn below(horizon: Position) -> Position {
        if horizon.seq > 0 {
            Position::new(horizon.xid, horizon.seq - 1)
        } else {
            Position::new(horizon.xid - 1, i64::MAX)
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.xid, self.seq)
    }
}
