//! Who is calling, and what they may do.
//!
//! Every call is made by a [`Caller`], named by the identity in its client
//! certificate ([`identity`]). The [`policy`] maps identities to roles, and
//! roles to the operations and decrypt purposes they allow. A call outside
//! its caller's role is refused with PERMISSION_DENIED before it touches any
//! data.

pub mod identity;
pub mod policy;

pub use self::identity::Caller;
pub use self::policy::{Operation, Policy};
