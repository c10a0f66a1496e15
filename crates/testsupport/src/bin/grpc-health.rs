//! `grpc-health --port N [--fail-after SECS] [--no-health]`: a gRPC health server for probe tests (see
//! `skiff_testsupport::health`). `grpc-health oci-layout DIR [NAME]` writes an OCI image layout
//! holding this binary (see `skiff_testsupport::image`).

use std::time::Duration;

fn usage() -> ! {
    eprintln!(
        "usage: grpc-health --port N [--fail-after SECS] [--no-health] | grpc-health oci-layout DIR [NAME]"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("oci-layout") {
        let Some(dir) = args.get(1) else { usage() };
        let name = args
            .get(2)
            .map_or(skiff_testsupport::image::GRPC_HEALTH_IMAGE, String::as_str);
        let exe = std::env::current_exe().expect("current exe");
        match skiff_testsupport::image::write_layout(&exe, "/grpc-health", name, dir.as_ref()) {
            Ok(()) => println!("wrote {name} to {dir}"),
            Err(e) => {
                eprintln!("grpc-health: {e}");
                std::process::exit(1)
            }
        }
        return;
    }
    let mut port = 0u16;
    let mut fail_after = None;
    let mut no_health = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value =
            |it: &mut std::slice::Iter<'_, String>| it.next().cloned().unwrap_or_else(|| usage());
        match a.as_str() {
            "--port" => port = value(&mut it).parse().unwrap_or_else(|_| usage()),
            "--fail-after" => {
                let secs: f64 = value(&mut it).parse().unwrap_or_else(|_| usage());
                fail_after = Some(Duration::from_secs_f64(secs));
            }
            "--no-health" => no_health = true,
            _ => usage(),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("grpc-health: listen on port {port}: {e}");
                std::process::exit(1)
            });
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        println!("listening on {port}");
        skiff_testsupport::health::serve(listener, fail_after, no_health).await;
    });
}
