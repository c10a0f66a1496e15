//! The waiting reasons a failed or blocked start leaves in the reason cache (spec §2.2), and the
//! mapping of image pull errors onto them (§5.2 step 5).
//!
//! `kubectl get pods` prints these verbatim in STATUS, so they are constants, never literals
//! scattered through the decision code.

pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";
pub const IMAGE_INSPECT_ERROR: &str = "ImageInspectError";
pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
pub const SIGNATURE_VALIDATION_FAILED: &str = "SignatureValidationFailed";
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";
pub const POST_START_HOOK_ERROR: &str = "PostStartHookError";

/// `status.reason` of a pod killed for running past `activeDeadlineSeconds` (also the event
/// reason).
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// `status.message` of such a pod (also the event message).
pub const DEADLINE_EXCEEDED_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";

/// The error name and waiting message for a failed pull of `image` with the runtime's `error`.
pub fn classify_pull_error(image: &str, error: &str) -> (&'static str, String) {
    if let Some(rest) = error.strip_prefix(REGISTRY_UNAVAILABLE) {
        (
            REGISTRY_UNAVAILABLE,
            format!("image pull failed for {image} because the registry is unavailable{rest}"),
        )
    } else if let Some(rest) = error.strip_prefix(SIGNATURE_VALIDATION_FAILED) {
        (
            SIGNATURE_VALIDATION_FAILED,
            format!("image pull failed for {image} because the signature validation failed{rest}"),
        )
    } else {
        (ERR_IMAGE_PULL, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_errors() {
        assert_eq!(
            classify_pull_error("x", "rpc error: not found"),
            (ERR_IMAGE_PULL, "rpc error: not found".to_string())
        );
        assert_eq!(
            classify_pull_error("x:1", "RegistryUnavailable: dial tcp"),
            (
                REGISTRY_UNAVAILABLE,
                "image pull failed for x:1 because the registry is unavailable: dial tcp"
                    .to_string()
            )
        );
    }
}
