//! The one place where core errors become Python exceptions.
//!
//! Every exception derives from `CoreError`, which carries the errno QEMU would report, so the
//! reference engine can build QEMU's `strerror`-style messages without parsing text.

use blockcore::format::FormatError;
use blockcore::graph::GraphError;
use blockcore::job::JobError as CoreJobError;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

create_exception!(
    _core,
    CoreError,
    PyException,
    "Base of every error raised by the core."
);
create_exception!(
    reference._core,
    NodeNotFound,
    CoreError,
    "No node of that name."
);
create_exception!(
    _core,
    NameInUse,
    CoreError,
    "A node or device of that name exists."
);
create_exception!(
    reference._core,
    NodeInUse,
    CoreError,
    "The node still has parents."
);
create_exception!(
    reference._core,
    NoMedium,
    CoreError,
    "The node has no data path."
);
create_exception!(
    _core,
    BitmapNotFound,
    CoreError,
    "No bitmap of that name on the node."
);
create_exception!(
    _core,
    BitmapExists,
    CoreError,
    "A bitmap of that name exists on the node."
);
create_exception!(
    _core,
    SizeMismatch,
    CoreError,
    "Merge of bitmaps over different lengths."
);
create_exception!(
    _core,
    ImageError,
    CoreError,
    "An I/O or image-format error; args: (message, errno)."
);

create_exception!(
    _core,
    JobError,
    CoreError,
    "Base of the job-layer errors; args[0] is the job id."
);
create_exception!(_core, JobNotFound, JobError, "No job with that id.");
create_exception!(_core, JobIdInUse, JobError, "A job with that id exists.");
create_exception!(
    _core,
    JobVerbError,
    JobError,
    "The verb is not allowed in the job's state; args: (job_id, status, verb)."
);
create_exception!(
    _core,
    JobAlreadyPaused,
    JobError,
    "User pause of a job the user already paused."
);
create_exception!(
    _core,
    JobNotPaused,
    JobError,
    "User resume of a job the user did not pause."
);

/// Converts a job error into the matching Python exception.
pub fn job_to_py(err: CoreJobError) -> PyErr {
    match err {
        CoreJobError::NotFound(id) => JobNotFound::new_err((id,)),
        CoreJobError::IdInUse(id) => JobIdInUse::new_err((id,)),
        CoreJobError::Verb { id, status, verb } => {
            JobVerbError::new_err((id, status.name().to_string(), verb.to_string()))
        }
        CoreJobError::AlreadyPaused(id) => JobAlreadyPaused::new_err((id,)),
        CoreJobError::NotPaused(id) => JobNotPaused::new_err((id,)),
        CoreJobError::Invalid(msg) => PyValueError::new_err(msg),
        CoreJobError::Graph(e) => to_py(e),
    }
}

create_exception!(
    reference._core,
    SnapshotNotFound,
    CoreError,
    "No internal snapshot matches; args: (id, name)."
);
create_exception!(
    reference._core,
    CycleError,
    CoreError,
    "Attaching would create a cycle; args: (child, parent)."
);

create_exception!(
    reference._core,
    LockConflict,
    ImageError,
    "Another user holds a conflicting image lock; args: (message, errno 11)."
);

create_exception!(
    reference._core,
    PermissionConflict,
    ImageError,
    "Parents of one node need permissions the other does not share; args: (message, errno 1)."
);

/// Converts a graph error into the matching Python exception.
pub fn to_py(err: GraphError) -> PyErr {
    match err {
        GraphError::NodeNotFound(n) => NodeNotFound::new_err(n),
        GraphError::NameInUse(n) => NameInUse::new_err(n),
        GraphError::NodeInUse(n) => NodeInUse::new_err(n),
        GraphError::NoMedium(n) => NoMedium::new_err(n),
        GraphError::BitmapNotFound(n) => BitmapNotFound::new_err(n),
        GraphError::BitmapExists(n) => BitmapExists::new_err(n),
        GraphError::SizeMismatch(e) => SizeMismatch::new_err((e.dest, e.src)),
        GraphError::Format(e) => format_to_py(&e),
        GraphError::Cycle { child, parent } => CycleError::new_err((child, parent)),
        GraphError::SnapshotNotFound { id, name } => SnapshotNotFound::new_err((id, name)),
        GraphError::PermissionConflict(m) => PermissionConflict::new_err((m, 1)),
    }
}

/// Converts a format error into `ImageError(message, errno)`.
pub fn format_to_py(err: &FormatError) -> PyErr {
    if let FormatError::Locked(m) = err {
        return LockConflict::new_err((m.clone(), err.errno()));
    }
    ImageError::new_err((err.to_string(), err.errno()))
}

/// Registers the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CoreError", py.get_type::<CoreError>())?;
    m.add("NodeNotFound", py.get_type::<NodeNotFound>())?;
    m.add("NameInUse", py.get_type::<NameInUse>())?;
    m.add("NodeInUse", py.get_type::<NodeInUse>())?;
    m.add("NoMedium", py.get_type::<NoMedium>())?;
    m.add("BitmapNotFound", py.get_type::<BitmapNotFound>())?;
    m.add("BitmapExists", py.get_type::<BitmapExists>())?;
    m.add("SizeMismatch", py.get_type::<SizeMismatch>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("JobError", py.get_type::<JobError>())?;
    m.add("JobNotFound", py.get_type::<JobNotFound>())?;
    m.add("JobIdInUse", py.get_type::<JobIdInUse>())?;
    m.add("JobVerbError", py.get_type::<JobVerbError>())?;
    m.add("JobAlreadyPaused", py.get_type::<JobAlreadyPaused>())?;
    m.add("JobNotPaused", py.get_type::<JobNotPaused>())?;
    m.add("SnapshotNotFound", py.get_type::<SnapshotNotFound>())?;
    m.add("CycleError", py.get_type::<CycleError>())?;
    m.add("LockConflict", py.get_type::<LockConflict>())?;
    m.add("PermissionConflict", py.get_type::<PermissionConflict>())?;
    Ok(())
}
