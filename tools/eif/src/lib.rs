//! EIF files (placeholder, filled in by the EIF work).
