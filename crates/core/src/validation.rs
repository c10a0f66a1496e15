//! Field errors as Kubernetes reports them (`field.Error`), and the validation shared by all kinds
//! (object names, labels, annotations).
//!
//! kubectl prints the API server's validation messages verbatim (`The Pod "bad" is invalid: ...`)
//! and tools match on them, so this module reproduces Kubernetes' field paths, error types and
//! wording. The API server turns a non-empty `Vec<FieldError>` into a 422 `Invalid` Status:
//! `message` from [`invalid_message`], one cause per error from [`FieldError::reason`],
//! [`FieldError::message`] and `field`.
//!
//! Submodules: `errors` (the error type and its rendering), `names` (string formats), `meta`
//! (`metadata`), `kinds` (Namespace, Node, Event, Lease), `config` (Secret, ConfigMap,
//! ServiceAccount), `resources` (quantities), and the pod
//! rules used by [`crate::pod`].

mod config;
mod endpoints;
mod errors;
mod kinds;
mod meta;
pub mod names;
pub(crate) mod pod;
pub(crate) mod pod_update;
mod resources;
mod service;

pub use config::{
    MAX_SECRET_SIZE, go_json_object_error, merge_string_data, validate_config_map,
    validate_config_map_update, validate_secret, validate_secret_update, validate_service_account,
    validate_service_account_update,
};
pub use endpoints::{
    validate_endpoint_slice, validate_endpoint_slice_update, validate_endpoints,
    validate_endpoints_update,
};
pub use errors::{ErrorType, FieldError, FieldPath, go_literal, go_quote, invalid_message};
pub use kinds::{validate_event, validate_lease, validate_namespace, validate_node};
pub use meta::{
    TOTAL_ANNOTATION_SIZE_LIMIT, validate_annotations, validate_label_name, validate_labels,
    validate_object_meta, validate_object_meta_update,
};
pub use names::{
    DNS1123_LABEL_MAX_LENGTH, DNS1123_SUBDOMAIN_MAX_LENGTH, LABEL_VALUE_MAX_LENGTH,
    inclusive_range_error, is_config_map_key, is_dns1035_label, is_dns1123_label,
    is_dns1123_subdomain, is_dns1123_subdomain_with_underscore, is_env_var_name,
    is_http_header_name, is_path_segment_name, is_qualified_name, is_relaxed_env_var_name,
    is_valid_ip, is_valid_label_value, is_valid_port_name, is_valid_port_num, mask_trailing_dash,
    max_len_error, regex_error,
};
pub use service::{
    cluster_ip_allocation_error, node_port_allocation_error, validate_service,
    validate_service_cluster_ips_related, validate_service_status_update, validate_service_update,
};
