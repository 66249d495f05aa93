//! What an identity may do with a repository name, as a decision the registry's handlers ask
//! for before they act. Two actions matter here, because they cost very different amounts:
//! **pull** what already exists (a manifest in memory or storage, a blob, a tag list) and
//! **build** (a manifest request whose image does not exist for the tag's current revision,
//! or a `/ui/` page that must plan one: Nix runs).
//!
//! | identity | `NIXERY_ANONYMOUS` | pull | build |
//! |---|---|---|---|
//! | anonymous (no credentials, or a token with an empty `sub`) | `build` (default) | yes | yes |
//! | anonymous | `pull` | yes | 401 challenge |
//! | anonymous | `none` | 401 challenge | 401 challenge |
//! | a user (htpasswd, or a token's `sub`) whose grants cover the name | any | yes | yes |
//! | a token's user whose `access` claim does not cover the name | any | 403 `DENIED` | 403 `DENIED` |
//!
//! Anonymous clients are challenged (401), not refused (403): the answer says "log in", and
//! the challenge is what makes `docker login` and the other clients send credentials. What
//! comes after an allowed build — the package policy, the build rate — is decided elsewhere
//! ([`crate::package_policy`], [`crate::rate_limit`]); each refusal has its own [`Refusal`]
//! reason for `/metrics`.

use super::{Identity, Principal};

/// `NIXERY_ANONYMOUS`: what clients without credentials may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnonymousAccess {
    /// Pull and cause builds: a registry without authentication (Nixery's behaviour).
    #[default]
    Build,
    /// Pull what exists for the tag's current revision; a build needs credentials.
    Pull,
    /// Nothing without credentials.
    None,
}

/// What a request would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read what exists.
    Pull,
    /// Cause a build (Nix runs).
    Build,
}

/// The decision, and why when it is no.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401 with the challenge: credentials would help.
    Challenge(String),
    /// 403 `DENIED`: the identity is known and lacks the right.
    Deny(String),
}

/// Why a request was refused, as `/metrics` counts them
/// (`nixery_refusals_total{reason=...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Credentials that do not hold (401).
    Credentials,
    /// No credentials where they are needed (401).
    Anonymous,
    /// A known identity without the right to the name (403).
    Access,
    /// A package refused by `NIXERY_PACKAGES_ALLOW` / `NIXERY_PACKAGES_DENY` (403).
    Package,
    /// Over `NIXERY_BUILD_RATE` (429).
    Rate,
}

impl Refusal {
    pub const ALL: [Refusal; 5] =
        [Refusal::Credentials, Refusal::Anonymous, Refusal::Access, Refusal::Package, Refusal::Rate];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Credentials => "credentials",
            Refusal::Anonymous => "anonymous",
            Refusal::Access => "access",
            Refusal::Package => "package_policy",
            Refusal::Rate => "build_rate",
        }
    }
}

/// May `identity` do `action` on `name` (as in the request's URL)? See the module docs.
pub fn decide(anonymous: AnonymousAccess, identity: &Identity, name: &str, action: Action) -> Decision {
    match &identity.principal {
        Principal::Anonymous => match (anonymous, action) {
            (AnonymousAccess::Build, _) | (AnonymousAccess::Pull, Action::Pull) => Decision::Allow,
            (AnonymousAccess::Pull, Action::Build) => Decision::Challenge(format!(
                "authentication required to build '{name}': anonymous clients may pull only images that \
                 exist for the tag's current revision"
            )),
            (AnonymousAccess::None, _) => Decision::Challenge("authentication required".to_owned()),
        },
        Principal::User(user) if !identity.may_pull(name) => {
            Decision::Deny(format!("'{user}' may not pull '{name}': the token grants no pull access to it"))
        }
        Principal::User(_) => Decision::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Grants;
    use crate::auth::token::AccessEntry;

    fn user(grants: Grants) -> Identity {
        Identity { principal: Principal::User("alice".into()), grants }
    }

    #[test]
    fn the_table_of_the_module_docs() {
        use AnonymousAccess as A;
        use Decision::*;
        let anonymous = Identity::anonymous();
        let everything = user(Grants::Everything);
        let hello = user(Grants::Listed(vec![AccessEntry {
            kind: "repository".into(),
            name: "hello".into(),
            actions: vec!["pull".into()],
        }]));
        let allowed = |mode, id: &Identity, name, action| decide(mode, id, name, action) == Allow;
        let challenged = |mode, id: &Identity, name, action| matches!(decide(mode, id, name, action), Challenge(_));
        let denied = |mode, id: &Identity, name, action| matches!(decide(mode, id, name, action), Deny(_));
        for action in [Action::Pull, Action::Build] {
            assert!(allowed(A::Build, &anonymous, "hello", action));
            assert!(challenged(A::None, &anonymous, "hello", action));
            for mode in [A::Build, A::Pull, A::None] {
                assert!(allowed(mode, &everything, "anything/at/all", action));
                assert!(allowed(mode, &hello, "hello", action));
                assert!(denied(mode, &hello, "shell/hello", action));
            }
        }
        assert!(allowed(A::Pull, &anonymous, "hello", Action::Pull));
        assert!(challenged(A::Pull, &anonymous, "hello", Action::Build));
        let Challenge(why) = decide(A::Pull, &anonymous, "hello", Action::Build) else { unreachable!() };
        assert!(why.starts_with("authentication required to build 'hello'"), "{why}");
        let Deny(why) = decide(A::Build, &hello, "secret", Action::Pull) else { unreachable!() };
        assert_eq!(why, "'alice' may not pull 'secret': the token grants no pull access to it");
    }
}
