//! Pod defaulting and validation, as the API server applies them on create and update.
