//! `skiff image`: the node's image store from the command line — load images without a registry
//! (`import`, as `kind load` does), list, pull and remove them. It works on the store of the agent
//! under `<data-dir>/agent`, also while that agent runs.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use skiff_images::{ImageInfo, PullOptions};

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// The data dir of the `skiff up` whose node to use [default: $XDG_STATE_HOME/skiff or ~/.local/state/skiff]
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The agent's state dir, for a `skiff agent` started with --state-dir [default: <data dir>/agent]
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Load images from an OCI image layout directory, an OCI layout tar or a `docker save` tar.
    Import { path: PathBuf },
    /// List the node's images.
    #[command(alias = "list")]
    Ls,
    /// Pull an image from its registry into the node's store.
    Pull {
        image: String,
        /// Credentials for the registry.
        #[arg(long, value_name = "USER:PASSWORD")]
        creds: Option<String>,
        /// A registry (host[:port]) to reach over plain HTTP; loopback registries always may.
        #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
        insecure_registries: Vec<String>,
    },
    /// Remove an image from the node's store.
    Rm { image: String },
}

pub async fn run(args: ImageArgs) -> Result<(), String> {
    let state_dir = args.state_dir.unwrap_or_else(|| {
        args.data_dir
            .unwrap_or_else(crate::default_data_dir)
            .join("agent")
    });
    let store = crate::runtime::image_store(&state_dir)?;
    match args.command {
        ImageCommand::Import { path } => {
            let store2 = store.clone();
            let images = tokio::task::spawn_blocking(move || store2.import(&path))
                .await
                .map_err(|e| e.to_string())??;
            if images.is_empty() {
                return Err("the archive holds no image".into());
            }
            for i in &images {
                println!("imported {} ({})", display_name(i), short_id(&i.id));
            }
        }
        ImageCommand::Ls => print_table(&store.list()),
        ImageCommand::Pull {
            image,
            creds,
            insecure_registries,
        } => {
            let auth = match creds {
                None => None,
                Some(c) => match c.split_once(':') {
                    Some((u, p)) => Some((u.to_string(), p.to_string())),
                    None => return Err("--creds takes USER:PASSWORD".into()),
                },
            };
            let opts = PullOptions {
                auth,
                insecure_registries,
            };
            let info = store.pull(&image, &opts).await.map_err(|e| e.to_string())?;
            println!(
                "pulled {} ({}, {} bytes)",
                display_name(&info),
                short_id(&info.id),
                info.size_bytes
            );
        }
        ImageCommand::Rm { image } => {
            store.remove(&image)?;
            println!("removed {image}");
        }
    }
    Ok(())
}

fn display_name(i: &ImageInfo) -> &str {
    i.names
        .iter()
        .find(|n| !n.contains('@'))
        .or(i.names.first())
        .map_or("<none>", String::as_str)
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn print_table(images: &[ImageInfo]) {
    let rows: Vec<[String; 3]> = images
        .iter()
        .map(|i| {
            [
                display_name(i).to_string(),
                short_id(&i.id).to_string(),
                human_size(i.size_bytes),
            ]
        })
        .collect();
    let header = ["IMAGE", "ID", "SIZE"];
    let width = |c: usize| {
        rows.iter()
            .map(|r| r[c].len())
            .chain([header[c].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    println!("{:w0$}   {:w1$}   {}", header[0], header[1], header[2]);
    for r in rows {
        println!("{:w0$}   {:w1$}   {}", r[0], r[1], r[2]);
    }
}

/// Bytes as `crictl images` prints them: `1.09MB`, `512kB`.
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        return format!("{bytes}B");
    }
    let n = format!("{v:.3}");
    format!(
        "{}{}",
        n.trim_end_matches('0').trim_end_matches('.'),
        units[u]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_090_000), "1.09MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }
}
