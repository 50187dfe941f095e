//! Whose rows a read may return. Every read the API and the console serve
//! takes an [`OrgScope`] and filters by it in SQL, so a handler cannot
//! forget its caller's organization: another organization's event or
//! delivery is simply not found.

use uuid::Uuid;

use super::types::Id;

/// The organizations a caller may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgScope {
    /// A platform key (or busbar itself): every organization.
    Platform,
    /// An organization key, or a platform key asking for one organization.
    Organization(Uuid),
}

impl OrgScope {
    /// The scope of a key bound to `organization` (`None`: a platform key).
    pub fn of_key(organization: Option<Uuid>) -> OrgScope {
        match organization {
            Some(organization) => OrgScope::Organization(organization),
            None => OrgScope::Platform,
        }
    }

    /// The one organization, if the scope is limited to one.
    pub fn organization(self) -> Option<Uuid> {
        match self {
            OrgScope::Platform => None,
            OrgScope::Organization(organization) => Some(organization),
        }
    }

    /// Whether rows of `organization` are in the scope.
    pub fn includes(self, organization: Uuid) -> bool {
        self.organization().is_none_or(|own| own == organization)
    }

    /// The parameter for `($n IS NULL OR organization_id = $n)`: `NULL`
    /// for the platform.
    pub(crate) fn bind(self) -> Option<Id> {
        self.organization().map(Id)
    }
}
