//! Manifests, indexes and image configs (OCI and Docker schema 2), and the choice of a platform.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ImageConfig;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What a manifest request accepts.
pub(crate) const ACCEPT: &[&str] = &[OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Layer media types we unpack (compression is detected from the bytes, not trusted from here).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A manifest body, classified.
#[derive(Debug)]
pub(crate) enum Parsed {
    Manifest(Manifest),
    Index(Index),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// Classifies and parses a manifest or index body. The media type may come from the response
/// header (`content_type`) or the body's `mediaType`; bodies without either are recognised by
/// their fields.
pub(crate) fn parse_manifest(body: &[u8], content_type: Option<&str>) -> Result<Parsed, String> {
    let probe: Probe =
        serde_json::from_slice(body).map_err(|e| format!("failed to parse manifest: {e}"))?;
    let media = probe
        .media_type
        .as_deref()
        .or(content_type)
        .unwrap_or_default();
    if probe.schema_version == Some(1) || media == DOCKER_SCHEMA1 {
        return Err("schema 1 image manifests are no longer supported".to_string());
    }
    let is_index = media == OCI_INDEX || media == DOCKER_LIST || probe.manifests.is_some();
    let is_manifest = media == OCI_MANIFEST || media == DOCKER_MANIFEST || probe.config.is_some();
    if is_index && !is_manifest {
        let idx: Index =
            serde_json::from_slice(body).map_err(|e| format!("failed to parse index: {e}"))?;
        Ok(Parsed::Index(idx))
    } else if is_manifest {
        let m: Manifest =
            serde_json::from_slice(body).map_err(|e| format!("failed to parse manifest: {e}"))?;
        Ok(Parsed::Manifest(m))
    } else {
        Err(format!("unsupported manifest media type {media:?}"))
    }
}

/// The platform this node runs: `linux/<GOARCH-style arch>`.
pub(crate) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    ("linux", arch)
}

/// Picks the manifest for `os/arch` from an index: an exact platform match, preferring no
/// variant (or `v1`/`v8`, the baselines); entries without a platform only when nothing matches
/// (a single-entry index, as an OCI layout often is). Attestation manifests
/// (`unknown/unknown`) are never picked.
pub(crate) fn select_platform<'a>(
    manifests: &'a [Descriptor],
    os: &str,
    arch: &str,
) -> Option<&'a Descriptor> {
    let is_manifest = |d: &&Descriptor| {
        d.media_type.is_empty()
            || d.media_type == OCI_MANIFEST
            || d.media_type == DOCKER_MANIFEST
            || d.media_type == OCI_INDEX
            || d.media_type == DOCKER_LIST
    };
    let matching: Vec<&Descriptor> = manifests
        .iter()
        .filter(is_manifest)
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .collect();
    let baseline = |d: &&&Descriptor| {
        matches!(
            d.platform.as_ref().and_then(|p| p.variant.as_deref()),
            None | Some("v1") | Some("v8")
        )
    };
    if let Some(d) = matching.iter().find(baseline) {
        return Some(d);
    }
    if let Some(d) = matching.first() {
        return Some(d);
    }
    let unplatformed: Vec<&Descriptor> = manifests
        .iter()
        .filter(is_manifest)
        .filter(|d| d.platform.is_none())
        .collect();
    if unplatformed.len() == 1 {
        return Some(unplatformed[0]);
    }
    None
}

pub(crate) fn is_layer_type(media_type: &str) -> bool {
    // Docker schema 2 manifests written by old tools sometimes leave it empty.
    media_type.is_empty() || LAYER_TYPES.contains(&media_type)
}

pub(crate) fn is_config_type(media_type: &str) -> bool {
    media_type.is_empty() || CONFIG_TYPES.contains(&media_type)
}

/// Checks that a manifest describes a runnable container image.
pub(crate) fn check_image_manifest(m: &Manifest) -> Result<(), String> {
    if !is_config_type(&m.config.media_type) {
        return Err(format!(
            "unsupported image config media type {:?} (not a container image)",
            m.config.media_type
        ));
    }
    for l in &m.layers {
        if !is_layer_type(&l.media_type) {
            return Err(format!("unsupported layer media type {:?}", l.media_type));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// The parts of an image config a runtime needs, and the layers' diff ids.
pub(crate) fn parse_config(body: &[u8]) -> Result<(ImageConfig, Vec<String>), String> {
    let f: ConfigFile =
        serde_json::from_slice(body).map_err(|e| format!("failed to parse image config: {e}"))?;
    let c = f.config.unwrap_or_default();
    let cfg = ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
    };
    Ok((cfg, f.rootfs.unwrap_or_default().diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(digest: &str, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn picks_linux_amd64() {
        let list = vec![
            desc("arm", "linux", "arm64", Some("v8")),
            desc("att", "unknown", "unknown", None),
            desc("v3", "linux", "amd64", Some("v3")),
            desc("amd", "linux", "amd64", None),
            desc("win", "windows", "amd64", None),
        ];
        assert_eq!(
            select_platform(&list, "linux", "amd64").unwrap().digest,
            "amd"
        );
        assert_eq!(
            select_platform(&list, "linux", "arm64").unwrap().digest,
            "arm"
        );
        assert!(select_platform(&list, "linux", "s390x").is_none());
        let only_v3 = vec![desc("v3", "linux", "amd64", Some("v3"))];
        assert_eq!(
            select_platform(&only_v3, "linux", "amd64").unwrap().digest,
            "v3"
        );
        let bare = vec![Descriptor {
            digest: "x".into(),
            ..Default::default()
        }];
        assert_eq!(
            select_platform(&bare, "linux", "amd64").unwrap().digest,
            "x"
        );
        let mut two = bare.clone();
        two.push(bare[0].clone());
        assert!(select_platform(&two, "linux", "amd64").is_none());
    }

    #[test]
    fn classifies_bodies() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:aa","size":3},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:bb","size":5}]}"#;
        let Parsed::Manifest(m) = parse_manifest(m, None).unwrap() else {
            panic!()
        };
        assert_eq!(m.layers.len(), 1);
        check_image_manifest(&m).unwrap();
        let i = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:cc","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert!(matches!(parse_manifest(i, None).unwrap(), Parsed::Index(_)));
        let s1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(parse_manifest(s1, None).unwrap_err().contains("schema 1"));
        assert!(parse_manifest(b"{}", None).is_err());
        assert!(parse_manifest(b"not json", None).is_err());
        let artifact = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:aa","size":3},"layers":[]}"#;
        let Parsed::Manifest(m) = parse_manifest(artifact, None).unwrap() else {
            panic!()
        };
        assert!(check_image_manifest(&m).is_err());
    }

    #[test]
    fn config_fields() {
        let body = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"],
            "Entrypoint":null,"WorkingDir":"","User":"1000"},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let (c, d) = parse_config(body).unwrap();
        assert_eq!(c.cmd, vec!["sh"]);
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user.as_deref(), Some("1000"));
        assert_eq!(d, vec!["sha256:aa"]);
    }
}
