//! `reference._core`: the Python face of `blockcore`, kept thin. Each exposed type has its own
//! module; errors are mapped in `errors.rs` only. The stub `reference/_core.pyi` mirrors this
//! module and is checked by `mypy.stubtest`.

mod bits;
mod errors;
mod graph;
mod image;
mod jobs;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<graph::Graph>()?;
    m.add_class::<graph::NodeInfo>()?;
    m.add_class::<graph::Qcow2Info>()?;
    m.add_class::<graph::BitmapInfo>()?;
    m.add_class::<graph::BitsCopy>()?;
    m.add_class::<graph::DetachedBitmap>()?;
    m.add_class::<graph::SnapshotInfo>()?;
    m.add_class::<bits::Bitmap>()?;
    m.add_class::<jobs::JobEvent>()?;
    m.add_class::<jobs::JobInfo>()?;
    m.add_function(wrap_pyfunction!(image::create_image, m)?)?;
    Ok(())
}
