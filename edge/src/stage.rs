//! `classgrid-edge stage`: staging progress and cache use of a running edge,
//! read from its content server's `/staging`.

use std::{process::ExitCode, time::Duration};

use classgrid_edge::cache::fetch;

pub async fn show(edge_url: &str, output: &str, watch: bool) -> ExitCode {
    if output != "table" && output != "json" {
        eprintln!("classgrid-edge: --output: must be table or json, not `{output}`");
        return ExitCode::from(2);
    }
    loop {
        let url = format!("{}/staging", edge_url.trim_end_matches('/'));
        let body = match fetch::get_text(&url).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!(
                    "classgrid-edge: cannot read {url}: {e}. Is `classgrid-edge run` listening there (--listen)?"
                );
                return ExitCode::FAILURE;
            }
        };
        if output == "json" {
            println!("{body}");
        } else {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            print_table(&v);
        }
        if !watch {
            return ExitCode::SUCCESS;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!();
    }
}

fn print_table(v: &serde_json::Value) {
    let mib = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0) / (1 << 20) as f64;
    println!(
        "{:<64}  {:<20}  {:<11}  {:>19}  MESSAGE",
        "SHA256", "NAME", "STATE", "PROGRESS"
    );
    for i in v["items"].as_array().into_iter().flatten() {
        let done = mib(&i["bytes_done"]);
        let size = mib(&i["size_bytes"]);
        let pct = if size > 0.0 {
            done / size * 100.0
        } else {
            100.0
        };
        println!(
            "{:<64}  {:<20}  {:<11}  {:>8.1}/{:<6.1}MiB {:>3.0}%  {}",
            i["sha256"].as_str().unwrap_or(""),
            i["name"].as_str().unwrap_or(""),
            i["state"].as_str().unwrap_or(""),
            done,
            size,
            pct,
            i["message"].as_str().unwrap_or("")
        );
    }
    let src = if v["measured"].as_bool().unwrap_or(false) {
        "measured"
    } else {
        "configured"
    };
    println!(
        "uplink {:.1} MiB/s ({src}); cache {:.1} of {:.1} MiB used",
        mib(&v["bytes_per_sec"]),
        mib(&v["cache_used_bytes"]),
        mib(&v["cache_limit_bytes"])
    );
}
