//! A workaround for running dfdx inside evcxr notebooks, in one place with its reason.
//!
//! dfdx keys gradients and optimizer state by tensor id, drawn from a global counter. evcxr compiles
//! every notebook cell into its own shared library, each with its own copy of dfdx and so its own
//! counter, starting at 0. A model built in one cell and trained in another would give its batch
//! tensors ids that collide with its parameters' ids, mixing up their gradients (seen: an index out of
//! bounds panic inside dfdx). Before training, [`advance_ids_past`] moves this copy's counter past every
//! parameter id; outside notebooks it does nothing.

use dfdx::prelude::*;

use crate::error::Result;
use crate::model::{self, Dev};

use super::step::dev_err;

/// Draws ids from this library's counter until it is past every parameter id of `model`.
pub(crate) fn advance_ids_past<M: TensorCollection<f32, Dev>>(model: &M, dev: &Dev) -> Result<()> {
    let max = model::tensor_infos(model).iter().filter_map(|t| t.id).max().unwrap_or(0);
    loop {
        let probe: Tensor<Rank0, f32, Dev> = dev.try_zeros().map_err(dev_err)?;
        match model::tensor_id(&probe) {
            Some(id) if id <= max => continue,
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_ids_are_read_and_the_counter_advances_past_the_parameters() {
        let dev = Dev::seed_from_u64(0);
        let a: Tensor<Rank1<3>, f32, Dev> = dev.zeros();
        let b: Tensor<Rank1<3>, f32, Dev> = dev.zeros();
        let (ia, ib) = (model::tensor_id(&a).unwrap(), model::tensor_id(&b).unwrap());
        assert!(ib > ia, "{ia} {ib}");
        let net = dev.build_module::<model::LinearArch, f32>();
        let w = model::tensor_id(&net.1.weight).unwrap();
        advance_ids_past(&net, &dev).unwrap();
        let probe: Tensor<Rank0, f32, Dev> = dev.zeros();
        assert!(model::tensor_id(&probe).unwrap() > w);
    }
}
