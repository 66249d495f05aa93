//! What an image is: a registry name and tag as the client sent them, and the canonical
//! [`ImageSpec`] (target architecture and sorted package set) that the registry builds.
//!
//! The name is the content: `shell/git` means "bash, coreutils, moreutils, nano and git".
//! Everything that decides the bytes of an image goes through [`ImageSpec`], so two names
//! that mean the same thing (`git/shell`, `shell/git`, `shell/git/git`) are the same image.

mod name;
mod platform;
mod spec;

pub use name::{ImageName, NameError, PackageName, Reference, Tag};
pub use platform::{PlatformError, Platforms};
pub use spec::{
    ALWAYS_INCLUDED, Arch, INTERACTIVE_SHELL, ImageSpec, ImageUser, NONROOT, SHELL_PACKAGES, is_always_included,
};
