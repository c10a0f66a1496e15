//! Pod volumes: names (DNS-1123 labels, unique), exactly one source, and the required fields
//! of the common sources.

use super::{FieldError, FieldPath, VolumeInfo, Volumes, backstep_errors, label_errors, s};
use k8s_openapi::api::core::v1::Volume;
use std::collections::BTreeSet;

/// Volume names (DNS labels, unique) and sources. Returns the volumes that validated cleanly:
/// mounts of any other volume are reported as `Not found`, as in Kubernetes.
pub(super) fn validate_volumes(volumes: &[Volume], path: &FieldPath) -> (Volumes, Vec<FieldError>) {
    let mut valid = Volumes::new();
    let mut all_names = BTreeSet::new();
    let mut errs = Vec::new();
    for (i, vol) in volumes.iter().enumerate() {
        let idx = path.index(i);
        let mut el = validate_volume_source(vol, &idx);
        if vol.name.is_empty() {
            el.push(FieldError::required(idx.child("name"), ""));
        } else {
            el.extend(label_errors(&vol.name, &idx.child("name")));
        }
        if all_names.contains(&vol.name) {
            el.push(FieldError::duplicate(idx.child("name"), vol.name.as_str()));
        }
        if el.is_empty() {
            all_names.insert(vol.name.clone());
            let pvc = vol.persistent_volume_claim.is_some() || vol.ephemeral.is_some();
            valid.insert(
                vol.name.clone(),
                VolumeInfo {
                    pvc,
                    image: vol.image.is_some(),
                },
            );
        } else {
            errs.extend(el);
        }
    }
    (valid, errs)
}

/// The JSON names of the volume sources that are set, in Kubernetes' checking order.
fn set_volume_sources(v: &Volume) -> Vec<&'static str> {
    let sources = [
        ("emptyDir", v.empty_dir.is_some()),
        ("hostPath", v.host_path.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("secret", v.secret.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("flocker", v.flocker.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("rbd", v.rbd.is_some()),
        ("cinder", v.cinder.is_some()),
        ("cephFS", v.cephfs.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("downwarAPI", v.downward_api.is_some()),
        ("fc", v.fc.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("configMap", v.config_map.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("storageos", v.storageos.is_some()),
        ("projected", v.projected.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
    ];
    sources
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect()
}

/// Exactly one source, and the required fields of the common sources.
fn validate_volume_source(v: &Volume, path: &FieldPath) -> Vec<FieldError> {
    let set = set_volume_sources(v);
    let Some(first) = set.first() else {
        return vec![FieldError::required(path, "must specify a volume type")];
    };
    let mut errs: Vec<FieldError> = set[1..]
        .iter()
        .map(|name| {
            FieldError::forbidden(path.child(name), "may not specify more than 1 volume type")
        })
        .collect();
    errs.extend(validate_first_source(v, first, path));
    errs
}

fn validate_first_source(v: &Volume, source: &str, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match source {
        "emptyDir" => {
            let limit = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref());
            if limit
                .and_then(|q| crate::quantity::Quantity::parse(&q.0).ok())
                .is_some_and(|q| q.milli_value() < 0)
            {
                errs.push(FieldError::forbidden(
                    path.child("emptyDir").child("sizeLimit"),
                    "SizeLimit field must be a valid resource quantity",
                ));
            }
        }
        "hostPath" => {
            let p = v
                .host_path
                .as_ref()
                .map(|h| h.path.as_str())
                .unwrap_or_default();
            let hp = path.child("hostPath").child("path");
            if p.is_empty() {
                errs.push(FieldError::required(hp, ""));
            } else {
                errs.extend(backstep_errors(p, &hp));
            }
        }
        "secret" => {
            let sec = v.secret.as_ref();
            let sp = path.child("secret");
            if sec
                .map(|x| s(&x.secret_name))
                .unwrap_or_default()
                .is_empty()
            {
                errs.push(FieldError::required(sp.child("secretName"), ""));
            }
            errs.extend(mode_errors(
                sec.and_then(|x| x.default_mode),
                &sp.child("defaultMode"),
            ));
        }
        "configMap" => {
            let cm = v.config_map.as_ref();
            let cp = path.child("configMap");
            if cm.map(|x| x.name.as_str()).unwrap_or_default().is_empty() {
                errs.push(FieldError::required(cp.child("name"), ""));
            }
            errs.extend(mode_errors(
                cm.and_then(|x| x.default_mode),
                &cp.child("defaultMode"),
            ));
        }
        "persistentVolumeClaim"
            if v.persistent_volume_claim
                .as_ref()
                .is_some_and(|p| p.claim_name.is_empty()) =>
        {
            errs.push(FieldError::required(
                path.child("persistentVolumeClaim").child("claimName"),
                "",
            ));
        }
        "nfs" => {
            let nfs = v.nfs.as_ref();
            let np = path.child("nfs");
            let (server, p) = nfs
                .map(|n| (n.server.as_str(), n.path.as_str()))
                .unwrap_or_default();
            if server.is_empty() {
                errs.push(FieldError::required(np.child("server"), ""));
            }
            if p.is_empty() {
                errs.push(FieldError::required(np.child("path"), ""));
            }
            if !p.starts_with('/') {
                errs.push(FieldError::invalid(
                    np.child("path"),
                    p,
                    "must be an absolute path",
                ));
            }
        }
        _ => {}
    }
    errs
}

fn mode_errors(mode: Option<i32>, path: &FieldPath) -> Vec<FieldError> {
    match mode {
        Some(m) if !(0..=0o777).contains(&m) => vec![FieldError::invalid(
            path,
            m,
            "must be a number between 0 and 0777 (octal), both inclusive",
        )],
        _ => Vec::new(),
    }
}
