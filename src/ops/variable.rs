//! Variable updates that are ops: `assign_add` and `assign_sub` compute
//! the new value with an op, then assign it. Tapes do not record them.

use crate::core::error::Result;
use crate::tensor::observe::without_gradients;
use crate::tensor::{Tensor, Variable};

impl Variable {
    /// `v += t` (not recorded by tapes).
    pub fn assign_add(&self, t: &Tensor) -> Result<()> {
        let v = without_gradients(|| self.peek().add(t))?;
        self.assign(&v)
    }

    /// `v -= t` (not recorded by tapes).
    pub fn assign_sub(&self, t: &Tensor) -> Result<()> {
        let v = without_gradients(|| self.peek().sub(t))?;
        self.assign(&v)
    }
}
