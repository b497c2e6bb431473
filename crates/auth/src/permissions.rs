//! Merchant users and what they may do: a master account per merchant and the operators it
//! creates, with permissions that are denied by default and can only be handed on by someone
//! who holds them.

use std::fmt;

/// What a merchant user may do, as a small set of flags. Deny by default: a new operator holds
/// nothing it was not given.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u16);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);
    pub const VIEW: Permissions = Permissions(1 << 0);
    pub const REFUND: Permissions = Permissions(1 << 1);
    pub const APPROVE: Permissions = Permissions(1 << 2);
    pub const PAYOUT: Permissions = Permissions(1 << 3);
    pub const MANAGE_BANK_ACCOUNT: Permissions = Permissions(1 << 4);
    pub const MANAGE_USERS: Permissions = Permissions(1 << 5);
    pub const MANAGE_DEVICES: Permissions = Permissions(1 << 6);
    /// Everything: what a master account holds.
    pub const ALL: Permissions = Permissions(0b111_1111);

    const NAMES: [(Permissions, &'static str); 7] = [
        (Permissions::VIEW, "view"),
        (Permissions::REFUND, "refund"),
        (Permissions::APPROVE, "approve"),
        (Permissions::PAYOUT, "payout"),
        (Permissions::MANAGE_BANK_ACCOUNT, "manage_bank_account"),
        (Permissions::MANAGE_USERS, "manage_users"),
        (Permissions::MANAGE_DEVICES, "manage_devices"),
    ];

    pub const fn bits(self) -> u16 {
        self.0
    }

    pub fn from_bits(bits: u16) -> Option<Permissions> {
        (bits & !Permissions::ALL.0 == 0).then_some(Permissions(bits))
    }

    pub const fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        Permissions::NAMES
            .iter()
            .filter(|(p, _)| self.contains(*p) && p.0 != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// Parses a list of names; `None` names the first unknown one.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Permissions, String> {
        let mut permissions = Permissions::NONE;
        for name in names {
            let found = Permissions::NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .ok_or_else(|| name.to_owned())?;
            permissions = permissions.union(found.0);
        }
        Ok(permissions)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.names())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The merchant's owner login: holds every permission.
    Master,
    /// A staff login created by a user with `manage_users`.
    Operator,
}

/// Why a grant is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// The grantor may not manage users.
    NotAllowed,
    /// The grantor tried to hand on a permission it does not hold itself.
    BeyondOwnPermissions,
    /// Users of one merchant never act on another merchant's users.
    OtherMerchant,
    /// The master account's permissions are not changed by anyone.
    MasterIsFixed,
}

/// A merchant user as permissions see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grantee {
    pub merchant_id: String,
    pub role: Role,
    pub permissions: Permissions,
}

impl Grantee {
    /// What the user may do: a master holds everything.
    pub fn effective(&self) -> Permissions {
        match self.role {
            Role::Master => Permissions::ALL,
            Role::Operator => self.permissions,
        }
    }
}

/// Whether `grantor` may give `target` exactly `wanted`: it must manage users of the same
/// merchant and hold every permission it gives (or takes away).
pub fn check_grant(
    grantor: &Grantee,
    target: &Grantee,
    wanted: Permissions,
) -> Result<(), GrantError> {
    if grantor.merchant_id != target.merchant_id {
        return Err(GrantError::OtherMerchant);
    }
    if target.role == Role::Master {
        return Err(GrantError::MasterIsFixed);
    }
    let own = grantor.effective();
    if !own.contains(Permissions::MANAGE_USERS) {
        return Err(GrantError::NotAllowed);
    }
    // Both what is added and what is removed must be within the grantor's own permissions.
    let changed = Permissions(wanted.0 ^ target.permissions.0);
    if !own.contains(changed) {
        return Err(GrantError::BeyondOwnPermissions);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, permissions: Permissions) -> Grantee {
        Grantee {
            merchant_id: "M1".into(),
            role,
            permissions,
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        let p = Permissions::parse(["view", "refund"]).expect("known names");
        assert_eq!(p.names(), ["view", "refund"]);
        assert_eq!(Permissions::parse(["view", "root"]), Err("root".to_owned()));
        assert_eq!(Permissions::from_bits(1 << 9), None);
    }

    #[test]
    fn a_user_grants_only_what_it_holds() {
        let master = user(Role::Master, Permissions::NONE);
        let manager = user(
            Role::Operator,
            Permissions::MANAGE_USERS.union(Permissions::VIEW),
        );
        let clerk = user(Role::Operator, Permissions::NONE);
        assert_eq!(check_grant(&master, &clerk, Permissions::ALL), Ok(()));
        assert_eq!(check_grant(&manager, &clerk, Permissions::VIEW), Ok(()));
        assert_eq!(
            check_grant(&manager, &clerk, Permissions::REFUND),
            Err(GrantError::BeyondOwnPermissions)
        );
        assert_eq!(
            check_grant(&clerk, &manager, Permissions::NONE),
            Err(GrantError::NotAllowed)
        );
        assert_eq!(
            check_grant(&manager, &master, Permissions::NONE),
            Err(GrantError::MasterIsFixed)
        );
        let other = Grantee {
            merchant_id: "M2".into(),
            ..clerk.clone()
        };
        assert_eq!(
            check_grant(&master, &other, Permissions::VIEW),
            Err(GrantError::OtherMerchant)
        );
    }

    #[test]
    fn taking_away_a_permission_one_does_not_hold_is_refused_too() {
        let manager = user(Role::Operator, Permissions::MANAGE_USERS);
        let payer = user(Role::Operator, Permissions::PAYOUT);
        assert_eq!(
            check_grant(&manager, &payer, Permissions::NONE),
            Err(GrantError::BeyondOwnPermissions)
        );
    }
}
