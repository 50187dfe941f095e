//! The target tables' catalog as a file: what `busbar catalog` writes and
//! what `busbar lsp` (and `check --catalog`) read, so that column checks
//! and completion work without a live database, offline and in CI.
//!
//! The file is a snapshot of [`Tables`], the same data
//! [`crate::check::database::check`] is given after reading a live
//! catalog through [`crate::store::inspect`]:
//!
//! ```json
//! { "tables": { "hris.employees": { "columns": [
//!     { "name": "email", "type": "character varying(255)", "nullable": false, "default": false } ],
//!   "unique": [["email", "organization_id"]] } } }
//! ```
//!
//! Columns are read back as PostgreSQL-like columns of their declared type
//! ([`ColumnInfo::new`]): limits come from the type's text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::database::Tables;
use crate::compile::ident::TableName;
use crate::config::{self, ConfigDir, model::StepModel};
use crate::store::StoreError;
use crate::store::catalog::{ColumnInfo, ColumnType, TableInfo};

/// The name of the catalog file the language server looks for, in the
/// integrations directory or the directory above it.
pub const FILE_NAME: &str = "catalog.json";

/// A catalog snapshot as written to a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    /// Each table by its name (`schema.table`); `null` for a table the
    /// database did not have when the snapshot was taken.
    pub tables: BTreeMap<String, Option<TableEntry>>,
}

/// One table of a [`CatalogFile`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub columns: Vec<ColumnEntry>,
    /// Column sets with a unique index or constraint (sorted names).
    #[serde(default)]
    pub unique: Vec<Vec<String>>,
}

/// One column of a [`TableEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnEntry {
    pub name: String,
    /// The type as the database spells it (`character varying(50)`).
    #[serde(rename = "type")]
    pub sql_type: String,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Whether the column has a default (so an insert may leave it out).
    #[serde(default)]
    pub default: bool,
}

fn yes() -> bool {
    true
}

impl CatalogFile {
    /// The snapshot of tables read from a database.
    pub fn from_tables(tables: &[(TableName, Option<TableInfo>)]) -> CatalogFile {
        let tables = tables
            .iter()
            .map(|(name, info)| {
                let entry = info.as_ref().map(|info| TableEntry {
                    columns: info
                        .columns
                        .iter()
                        .map(|column| ColumnEntry {
                            name: column.name.as_str().to_owned(),
                            sql_type: column.sql_type.clone(),
                            nullable: column.nullable,
                            default: column.has_default,
                        })
                        .collect(),
                    unique: info.unique.clone(),
                });
                (name.to_string(), entry)
            })
            .collect();
        CatalogFile { tables }
    }

    /// The snapshot as the database checks take it. Table names that are
    /// not valid identifiers are left out (no step can name them).
    pub fn to_tables(&self) -> Tables {
        self.tables
            .iter()
            .filter_map(|(name, entry)| {
                let name = TableName::parse(name).ok()?;
                let info = entry.as_ref().map(|entry| TableInfo {
                    columns: entry.columns.iter().map(ColumnEntry::to_info).collect(),
                    unique: entry.unique.clone(),
                });
                Some((name, info))
            })
            .collect()
    }

    /// Reads a catalog file.
    pub fn read(path: &Path) -> Result<CatalogFile, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| CatalogError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl ColumnEntry {
    /// The column as the checks see it.
    pub fn to_info(&self) -> ColumnInfo {
        let mut info = ColumnInfo::new(
            &self.name,
            ColumnType::from_name(&self.sql_type),
            &self.sql_type,
        );
        info.nullable = self.nullable;
        info.has_default = self.default;
        info
    }
}

/// Why a catalog file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the catalog file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the catalog file {} is not a catalog: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Where a catalog file for the integrations directory `dir` is, if there
/// is one: `dir/catalog.json`, else `catalog.json` in the directory above.
pub fn find_file(dir: &Path) -> Option<PathBuf> {
    let beside = dir.join(FILE_NAME);
    if beside.is_file() {
        return Some(beside);
    }
    let above = dir.parent()?.join(FILE_NAME);
    above.is_file().then_some(above)
}

/// Every table the directory's steps name, read from each file's model
/// (even from files with other errors), sorted, once each.
pub fn tables_in(dir: &ConfigDir) -> Vec<TableName> {
    let mut tables: Vec<TableName> = dir
        .integrations
        .iter()
        .filter_map(|file| config::load(file).0)
        .flat_map(|loaded| loaded.model.routes)
        .flat_map(|route| route.steps)
        .filter_map(|step| match StepModel::from_value(&step).ok()? {
            StepModel::Find(step) => Some(step.find),
            StepModel::Upsert(step) => Some(step.upsert),
            StepModel::Update(step) => Some(step.update),
            StepModel::Delete(step) => Some(step.delete),
            StepModel::Emit(_) => None,
        })
        .filter_map(|name| TableName::parse(&name).ok())
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

/// Reads the catalog of `tables` from the database at `url` (writing
/// nothing, see [`crate::store::inspect`]).
pub async fn snapshot(url: &str, tables: &[TableName]) -> Result<CatalogFile, StoreError> {
    let found = crate::store::inspect::read_tables(url, tables).await?;
    Ok(CatalogFile::from_tables(&found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_as_the_tables_it_was_taken_from() {
        let mut email = ColumnInfo::new("email", ColumnType::Text, "character varying(50)");
        email.nullable = false;
        let mut id = ColumnInfo::new("id", ColumnType::Uuid, "uuid");
        id.has_default = true;
        id.nullable = false;
        let table = TableName::parse("hris.employees").unwrap();
        let info = TableInfo {
            columns: vec![id, email],
            unique: vec![vec!["email".into()]],
        };
        let file = CatalogFile::from_tables(&[
            (table.clone(), Some(info.clone())),
            (TableName::parse("hris.gone").unwrap(), None),
        ]);
        let text = serde_json::to_string(&file).unwrap();
        let back: CatalogFile = serde_json::from_str(&text).unwrap();
        let tables = back.to_tables();
        assert_eq!(tables.get(&table), Some(&Some(info)));
        assert_eq!(
            tables.get(&TableName::parse("hris.gone").unwrap()),
            Some(&None)
        );
        let email = tables[&table].as_ref().unwrap().column("email").unwrap();
        assert_eq!(email.limits.max_chars, Some(50));
    }
}
