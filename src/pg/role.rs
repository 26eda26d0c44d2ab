//! Acting as another role for a few statements, the way a SECURITY DEFINER function does:
//! the current user id changes with SECURITY_LOCAL_USERID_CHANGE (so the code run meanwhile
//! cannot SET ROLE or SET SESSION AUTHORIZATION its way out) and is restored when the guard
//! is dropped, also when an ERROR unwinds through it. A (sub)transaction abort restores
//! both as well, so a longjmp past the guard leaves nothing behind.

use pgrx::pg_sys::{self, Oid};

/// While alive, the current user is the role given to [`ActingAs::switch`].
#[must_use = "the previous user is restored when the guard is dropped"]
pub struct ActingAs {
    user: Oid,
    context: i32,
}

impl ActingAs {
    pub fn switch(role: Oid) -> ActingAs {
        let mut user = pg_sys::InvalidOid;
        let mut context = 0;
        // SAFETY: saving and switching the backend's current user id and security context
        // (plain globals), as fmgr_security_definer does.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                role,
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
        }
        ActingAs { user, context }
    }

    /// The bootstrap superuser, which owns pg_perf's catalog tables.
    pub fn catalog_owner() -> ActingAs {
        ActingAs::switch(pg_sys::BOOTSTRAP_SUPERUSERID.into())
    }
}

impl Drop for ActingAs {
    fn drop(&mut self) {
        // SAFETY: restores the values saved in `switch`.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}
