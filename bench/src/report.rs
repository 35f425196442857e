//! Everything written from `results.json`: CSV tables, SVG figures and the
//! Markdown summary. It reads only that file, so `bench plot DIR` redraws a
//! past run exactly, and a run interrupted halfway still reports its parts.
//!
//! Aggregation: each point of a figure or a summary row is the median over
//! trials of that trial's statistic (min, mean, p50, p99, max latency, or
//! images/s); the spread shown is the lowest and highest trial.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::load::{RunResult, TargetStats};
use crate::plot::{self, Axes, Bar, Look, Pt, Series};
use crate::suite::med;

/// The study's reported numbers (BRIEF.md), for the side-by-side columns.
pub mod study {
    pub const ENCLAVE_START_S: f64 = 14.1;
    pub const DOCKER_START_S: f64 = 3.0;
    pub const IMAGE_BYTES: f64 = 1.1e9;
    pub const VSOCK_GBITS: f64 = 9.28;
    pub const VSOCK_SHARE_OF_TCP: f64 = 0.131;
    pub const STANDARD_MIB: (f64, f64) = (225.0, 257.0);
    pub const ENCLAVE_MIB: f64 = 1023.0;
    pub const PUBLIC_MIN_S: f64 = 0.05;
    pub const ENCLAVE_MIN_S: f64 = 0.13;
    pub const PUBLIC_MAX_100_S: f64 = 4.4;
    pub const ENCLAVE_MAX_100_S: f64 = 11.3;
}

/// Median and spread of one statistic over trials.
#[derive(Debug, Clone, Copy)]
pub struct Agg {
    pub med: f64,
    pub lo: f64,
    pub hi: f64,
}

fn agg(v: &[f64]) -> Agg {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return Agg { med: f64::NAN, lo: f64::NAN, hi: f64::NAN };
    }
    Agg { med: med(f.clone()), lo: f.iter().copied().fold(f64::INFINITY, f64::min), hi: f.iter().copied().fold(f64::NEG_INFINITY, f64::max) }
}

/// One summary row: an experiment's target at one x (threads or share).
pub struct Row {
    pub x: f64,
    pub trials: usize,
    pub sent: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub min: Agg,
    pub mean: Agg,
    pub p50: Agg,
    pub p90: Agg,
    pub p99: Agg,
    pub max: Agg,
    pub ips: Agg,
}

fn runs(results: &Value, experiment: &str) -> Vec<RunResult> {
    results["load"]
        .as_array()
        .map(|l| l.iter().filter(|r| r["experiment"] == experiment).filter_map(RunResult::from_json).collect())
        .unwrap_or_default()
}

/// Target names of an experiment, in first-seen order.
fn target_names(rs: &[RunResult]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in rs {
        for t in &r.targets {
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
    }
    names
}

/// Rows of one target, by x (threads, or the share for a mixed sweep).
fn rows(rs: &[RunResult], target: &str, by_share: bool) -> Vec<Row> {
    let mut by_x: BTreeMap<i64, (f64, Vec<&TargetStats>)> = BTreeMap::new();
    for r in rs {
        let x = if by_share { r.share.unwrap_or(0.0) } else { r.threads as f64 };
        if let Some(t) = r.target(target) {
            by_x.entry((x * 1000.0).round() as i64).or_insert((x, Vec::new())).1.push(t);
        }
    }
    by_x.into_values()
        .map(|(x, ts)| {
            let col = |f: fn(&TargetStats) -> f64| agg(&ts.iter().map(|t| f(t)).collect::<Vec<_>>());
            let mut errors = BTreeMap::new();
            for t in &ts {
                for (k, n) in &t.errors {
                    *errors.entry(k.clone()).or_insert(0) += n;
                }
            }
            Row {
                x,
                trials: ts.len(),
                sent: ts.iter().map(|t| t.sent).sum(),
                ok: ts.iter().map(|t| t.ok).sum(),
                errors,
                min: col(|t| t.min_ms),
                mean: col(|t| t.mean_ms),
                p50: col(|t| t.p50_ms),
                p90: col(|t| t.p90_ms),
                p99: col(|t| t.p99_ms),
                max: col(|t| t.max_ms),
                ips: col(|t| t.images_per_s),
            }
        })
        .collect()
}

fn caption(meta: &Value, model: &str, extra: &str) -> String {
    let s = |k: &str| meta[k].as_str().map(str::to_string).unwrap_or_else(|| meta[k].to_string());
    caption_with(meta, model, &format!("{} trials, median and min-max spread", s("trials")), extra)
}

/// [`caption`] with its own words for what the points and bars are.
fn caption_with(meta: &Value, model: &str, aggregation: &str, extra: &str) -> String {
    let s = |k: &str| meta[k].as_str().map(str::to_string).unwrap_or_else(|| meta[k].to_string());
    let mut c = format!(
        "{} ({} cores) | model {} | commit {} | {aggregation} | profile {}",
        s("cpu"),
        s("cores"),
        model,
        s("commit"),
        s("profile")
    );
    if !extra.is_empty() {
        c.push('\n');
        c.push_str(extra);
    }
    c
}

fn pts(rows: &[Row], f: fn(&Row) -> Agg, scale: f64) -> Vec<Pt> {
    rows.iter()
        .map(|r| {
            let a = f(r);
            Pt { x: r.x, y: a.med * scale, lo: a.lo * scale, hi: a.hi * scale }
        })
        .collect()
}

/// Latency (s, log) and throughput figures of a thread sweep.
fn sweep_figures(dir: &Path, results: &Value, experiment: &str, stem: &str, title: &str, model: &str, extra: &str) -> Result<Vec<String>, String> {
    let rs = runs(results, experiment);
    if rs.is_empty() {
        return Ok(Vec::new());
    }
    let meta = &results["meta"];
    let names = target_names(&rs);
    let mut lat = Vec::new();
    let mut thr = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let rw = rows(&rs, name, false);
        // p50 (median over trials) as the line; the band from the fastest to the slowest request.
        let band = rw.iter().map(|r| Pt { x: r.x, y: r.p50.med * 1e-3, lo: r.min.med * 1e-3, hi: r.max.med * 1e-3 }).collect();
        lat.push(Series { name: format!("{name} p50"), color: i, look: Look::Band, points: band });
        thr.push(Series { name: name.clone(), color: i, look: Look::Solid, points: pts(&rw, |r| r.ips, 1.0) });
    }
    if let Some(e) = results["engine"].as_array().and_then(|l| l.iter().find(|e| e["model"] == model)) {
        if let (Some(ips), Some(xmax)) = (e["images_per_s"].as_f64(), rs.iter().map(|r| r.threads).max()) {
            let p = |x: f64| Pt { x, y: ips, lo: ips, hi: ips };
            thr.push(Series { name: "bare engine (no serving)".into(), color: 7, look: Look::Light, points: vec![p(1.0), p(xmax as f64)] });
        }
    }
    let cap = caption(meta, model, &format!("batch of 2 x the study's photo, 2 requests per client thread, one connection per request. {extra}"));
    let a = format!("{stem}_latency.svg");
    let cap_lat = format!("{cap}\nLine: p50 of the requests (median over trials); band: from the fastest to the slowest request.");
    plot::lines(&dir.join(&a), &format!("{title}: latency per request"), &cap_lat,
        &Axes { x_desc: "client threads", y_desc: "latency, s (log)", log_x: false, log_y: true, int_x: true }, &lat)?;
    let b = format!("{stem}_throughput.svg");
    plot::lines(&dir.join(&b), &format!("{title}: throughput"), &cap,
        &Axes { x_desc: "client threads", y_desc: "images per second", log_x: false, log_y: false, int_x: true }, &thr)?;
    Ok(vec![a, b])
}

fn fmt_errors(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        "0".into()
    } else {
        e.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
    }
}

fn sweep_table(md: &mut String, results: &Value, experiment: &str, by_share: bool) {
    let rs = runs(results, experiment);
    let xname = if by_share { "secure share" } else { "threads" };
    let _ = writeln!(md, "| target | {xname} | trials | ok / sent | errors | min s | mean s | p50 s | p99 s | max s | images/s |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for name in target_names(&rs) {
        for r in rows(&rs, &name, by_share) {
            let s = |a: Agg| plot::sig(a.med / 1000.0);
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
                if by_share { format!("{:.1}", r.x) } else { format!("{}", r.x as u64) },
                r.trials,
                r.ok,
                r.sent,
                fmt_errors(&r.errors),
                s(r.min),
                s(r.mean),
                s(r.p50),
                s(r.p99),
                s(r.max),
                plot::sig(r.ips.med)
            );
        }
    }
    md.push('\n');
}

fn csv_all(dir: &Path, results: &Value) -> Result<(), String> {
    let mut raw = String::from("experiment,trial,threads,share,target,sent,ok,errors,min_ms,mean_ms,p50_ms,p99_ms,max_ms,images_per_s,wall_s\n");
    let mut sum = String::from("experiment,target,x,trials,sent,ok,errors,min_ms,mean_ms,p50_ms,p50_lo,p50_hi,p99_ms,max_ms,max_lo,max_hi,images_per_s,ips_lo,ips_hi\n");
    for exp in ["local", "mixed", "net", "peer", "sealed"] {
        let rs = runs(results, exp);
        for r in &rs {
            for t in &r.targets {
                let _ = writeln!(
                    raw,
                    "{exp},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}",
                    r.trial,
                    r.threads,
                    r.share.map(|s| format!("{s:.2}")).unwrap_or_default(),
                    t.name,
                    t.sent,
                    t.ok,
                    t.error_count(),
                    t.min_ms,
                    t.mean_ms,
                    t.p50_ms,
                    t.p99_ms,
                    t.max_ms,
                    t.images_per_s,
                    r.wall_s
                );
            }
        }
        for name in target_names(&rs) {
            for w in rows(&rs, &name, exp == "mixed") {
                let _ = writeln!(
                    sum,
                    "{exp},{name},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}",
                    w.x, w.trials, w.sent, w.ok, w.errors.values().sum::<u64>(), w.min.med, w.mean.med, w.p50.med, w.p50.lo,
                    w.p50.hi, w.p99.med, w.max.med, w.max.lo, w.max.hi, w.ips.med, w.ips.lo, w.ips.hi
                );
            }
        }
    }
    let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"));
    w("load_runs.csv", &raw)?;
    w("load_summary.csv", &sum)?;
    if let Some(l) = results["start"].as_array() {
        let mut s = String::from("trial,secure_s,public_s,stack_s\n");
        for (i, t) in l.iter().enumerate() {
            let _ = writeln!(s, "{i},{},{},{}", t["secure_s"], t["public_s"], t["stack_s"]);
        }
        w("start.csv", &s)?;
    }
    if let Some(l) = results["channel"].as_array() {
        let mut s = String::from("bytes,framed_bytes_per_s,raw_bytes_per_s,ratio\n");
        for p in l {
            let _ = writeln!(s, "{},{},{},{}", p["bytes"], p["framed_bytes_per_s"], p["raw_bytes_per_s"], p["ratio"]);
        }
        w("channel.csv", &s)?;
    }
    if let Some(l) = results["memory"]["processes"].as_array() {
        let mut s = String::from("process,mean_load_kib,max_load_kib,peak_kib,samples\n");
        for p in l {
            let _ = writeln!(s, "{},{},{},{},{}", p["name"].as_str().unwrap_or(""), p["mean_load_kib"], p["max_load_kib"], p["peak_kib"], p["samples"]);
        }
        w("memory.csv", &s)?;
    }
    if let Some(l) = results["engine"].as_array() {
        let mut s = String::from("model,threads,images,seconds,images_per_s,ms_per_image,reference,reference_images_per_s\n");
        for e in l {
            let r = &e["reference"];
            let _ = writeln!(s, "{},{},{},{},{},{},{},{}", e["model"].as_str().unwrap_or(""), e["threads"], e["images"], e["seconds"],
                e["images_per_s"], e["ms_per_image"], r["engine"].as_str().unwrap_or(""), r["images_per_s"]);
        }
        w("engine.csv", &s)?;
    }
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Best median images/s of a target over an experiment's thread counts.
fn best_ips(results: &Value, exp: &str, target: &str) -> Option<(f64, f64)> {
    rows(&runs(results, exp), target, false).iter().map(|r| (r.ips.med, r.x)).filter(|(v, _)| v.is_finite()).max_by(|a, b| a.0.total_cmp(&b.0))
}

/// The peers measured (`results.peer.peers`; a run from before several peers had one, at `results.peer`).
fn peers(results: &Value) -> Vec<Value> {
    match results["peer"]["peers"].as_array() {
        Some(l) => l.clone(),
        None if results["peer"]["name"].is_string() => vec![results["peer"].clone()],
        None => Vec::new(),
    }
}

fn at(results: &Value, exp: &str, target: &str, threads: f64) -> Option<Row> {
    rows(&runs(results, exp), target, false).into_iter().find(|r| r.x == threads)
}

/// Writes CSVs, figures and summary.md for `results` into `dir`.
pub fn write_all(dir: &Path, results: &Value) -> Result<(), String> {
    csv_all(dir, results)?;
    let meta = &results["meta"];
    let model = meta["model"].as_str().unwrap_or("?").to_string();
    let cmp = meta["compare_model"].as_str().unwrap_or("?").to_string();
    let mut figs: Vec<(String, Vec<String>)> = Vec::new();

    figs.push(("Local load (the study's Fig. 3)".into(), sweep_figures(dir, results, "local", "fig3_local", "Local load", &model, "Public and secure routes measured separately.")?));
    let net_shape = meta["net_shape"].as_str().unwrap_or("");
    figs.push(("Internet-like load (Fig. 4)".into(), sweep_figures(dir, results, "net", "fig4_net", "Internet-like load", &model, &format!("Client in a network namespace: {net_shape}."))?));
    figs.push(("Ours vs the study's stack (peer)".into(), sweep_figures(dir, results, "peer", "peer", "Ours vs peer", &cmp, "Each system alone on the machine.")?));

    // Mixed sweep: p50 and p99 per route against the secure share.
    let mixed = runs(results, "mixed");
    if !mixed.is_empty() {
        let mut series = Vec::new();
        for (i, name) in target_names(&mixed).iter().enumerate() {
            let rw = rows(&mixed, name, true);
            series.push(Series { name: format!("{name} p50"), color: i, look: Look::Solid, points: pts(&rw, |r| r.p50, 1e-3) });
            series.push(Series { name: format!("{name} p99"), color: i, look: Look::Light, points: pts(&rw, |r| r.p99, 1e-3) });
        }
        let threads = mixed.first().map(|r| r.threads).unwrap_or(0);
        let cap = caption(meta, &model, &format!("One stream of {threads} client threads; the share of requests sent to /predict-secure/ varies."));
        plot::lines(&dir.join("fig5_mixed.svg"), "Mixed-privacy sweep: latency per route", &cap,
            &Axes { x_desc: "share of secure requests", y_desc: "latency, s", log_x: false, log_y: false, int_x: false }, &series)?;
        figs.push(("Mixed-privacy sweep (Fig. 5)".into(), vec!["fig5_mixed.svg".into()]));
    }

    // Start time: ours (median, spread) and the study's.
    if let Some(st) = results["start"].as_array().filter(|l| !l.is_empty()) {
        let col = |k: &str| agg(&st.iter().map(|t| f(&t[k])).collect::<Vec<_>>());
        let mut bars = Vec::new();
        for (label, k, c) in [("secure model server", "secure_s", 1), ("public model server", "public_s", 0), ("whole stack to /ready", "stack_s", 2)] {
            let a = col(k);
            bars.push(Bar { label: label.into(), value: a.med, lo: a.lo, hi: a.hi, color: c });
        }
        for (name, ps) in peers(results).iter().filter_map(|p| Some((p["name"].as_str()?, p["ready_s"].as_f64()?))) {
            bars.push(Bar { label: format!("{name} ({cmp}) to /health"), value: ps, lo: ps, hi: ps, color: 4 });
        }
        bars.push(Bar { label: "study: enclave".into(), value: study::ENCLAVE_START_S, lo: 0.0, hi: 0.0, color: 7 });
        bars.push(Bar { label: "study: Docker".into(), value: study::DOCKER_START_S, lo: 0.0, hi: 0.0, color: 7 });
        let cap = caption(meta, &model, "Model server: exec to first Ping answered. Stack: first exec to /ready 200. Grey: the study's reported numbers (Nitro enclave, Docker).");
        plot::bars(&dir.join("fig2_start.svg"), "Start time (the study's Fig. 2, left)", &cap, "seconds (log)", "s", &bars)?;
        figs.push(("Start time (Fig. 2, left)".into(), vec!["fig2_start.svg".into()]));
    }

    // Channel throughput.
    if let Some(ch) = results["channel"].as_array().filter(|l| !l.is_empty()) {
        let p = |k: &str| ch.iter().map(|c| { let y = f(&c[k]) * 8e-9; Pt { x: f(&c["bytes"]), y, lo: y, hi: y } }).collect::<Vec<_>>();
        let series = vec![
            Series { name: "framed protocol into the model server (unix socket)".into(), color: 0, look: Look::Solid, points: p("framed_bytes_per_s") },
            Series { name: "raw socket copy (unix socket)".into(), color: 7, look: Look::Solid, points: p("raw_bytes_per_s") },
        ];
        let cap = caption(meta, &model, "One connection, one message of n bytes then a small reply, repeated. Framed: Infer frames refused at the signature check.");
        plot::lines(&dir.join("fig2_channel.svg"), "Channel throughput (the study's Fig. 2, right)", &cap,
            &Axes { x_desc: "message size, bytes (log)", y_desc: "Gbit/s", log_x: true, log_y: false, int_x: false }, &series)?;
        figs.push(("Channel throughput (Fig. 2, right)".into(), vec!["fig2_channel.svg".into()]));
    }

    // Memory.
    let mut mem_procs: Vec<Value> = results["memory"]["processes"].as_array().cloned().unwrap_or_default();
    if let Some(pm) = results["peer"]["memory"].as_array() {
        mem_procs.extend(pm.iter().cloned());
    }
    if !mem_procs.is_empty() {
        let mut bars = Vec::new();
        for (i, p) in mem_procs.iter().enumerate() {
            let name = p["name"].as_str().unwrap_or("?");
            let mean = f(&p["mean_load_kib"]) / 1024.0;
            bars.push(Bar { label: format!("{name}"), value: mean, lo: mean, hi: f(&p["peak_kib"]) / 1024.0, color: i % 7 });
        }
        bars.push(Bar { label: "study: standard".into(), value: study::STANDARD_MIB.1, lo: study::STANDARD_MIB.0, hi: study::STANDARD_MIB.1, color: 7 });
        bars.push(Bar { label: "study: enclave".into(), value: study::ENCLAVE_MIB, lo: 0.0, hi: 0.0, color: 7 });
        let cap = caption(meta, &model, &format!("Bar: mean RSS under light mixed load (sampled every 100 ms); whisker up to peak RSS (VmHWM). Peer and \"ours\" rows: {cmp}."));
        plot::bars(&dir.join("table1_memory.svg"), "Memory (the study's Table I)", &cap, "MiB (log)", "MiB", &bars)?;
        figs.push(("Memory (Table I)".into(), vec!["table1_memory.svg".into()]));
    }

    if results["sealed"].is_object() {
        figs.push(("Sealed requests".into(), sealed_figures(dir, results)?));
        sealed_csv(dir, results)?;
    }

    let md = summary(results, &figs);
    std::fs::write(dir.join("summary.md"), md).map_err(|e| format!("summary.md: {e}"))
}

fn summary(results: &Value, figs: &[(String, Vec<String>)]) -> String {
    let meta = &results["meta"];
    let model = meta["model"].as_str().unwrap_or("?");
    let cmp = meta["compare_model"].as_str().unwrap_or("?");
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmark summary\n");
    let _ = writeln!(
        md,
        "Machine: {} ({} cores). Model: {model}. Commit: {}. Profile: {}, {} trials. Date: {}. Suite time: {:.0} s.\n",
        meta["cpu"].as_str().unwrap_or("?"),
        meta["cores"],
        meta["commit"].as_str().unwrap_or("?"),
        meta["profile"].as_str().unwrap_or("?"),
        meta["trials"],
        meta["date"].as_str().unwrap_or("?"),
        f(&meta["suite_seconds"])
    );
    let _ = writeln!(md, "Requests: JSON `{{\"images\": [b64, b64]}}` ({} bytes) of the study's photo ({} bytes); {}.\n",
        meta["body_bytes"], meta["image_bytes"], meta["client"].as_str().unwrap_or(""));

    let _ = writeln!(md, "## Headline\n");
    let engine = |m: &str| results["engine"].as_array().and_then(|l| l.iter().find(|e| e["model"] == m)).map(|e| f(&e["images_per_s"]));
    if let Some(e) = engine(model) {
        let _ = writeln!(md, "- Bare engine ({model}, one thread per core, no serving): **{} images/s**.", plot::sig(e));
        for r in results["engine"].as_array().into_iter().flatten().map(|e| (e["model"].as_str().unwrap_or("?"), &e["reference"])) {
            if let (m, Some(ips)) = (r.0, r.1["images_per_s"].as_f64()) {
                let tract = engine(m).unwrap_or(f64::NAN);
                let _ = writeln!(md, "- Engine gap ({m}): tract {} images/s, {} (Pillow preprocessing, same photo and threads) {} images/s: **tract = {:.2}x the reference**.",
                    plot::sig(tract), r.1["engine"].as_str().unwrap_or("reference"), plot::sig(ips), tract / ips);
            }
        }
        for route in ["public", "secure"] {
            if let Some((best, x)) = best_ips(results, "local", route) {
                let _ = writeln!(md, "- Serving efficiency, {route} route: best end-to-end {} images/s (at {} threads) / engine = **{:.0}%**.", plot::sig(best), x, best / e * 100.0);
            }
        }
    }
    if at(results, "local", "public", 1.0).is_some() {
        let _ = writeln!(md, "- The study's local load: public min {} s, enclave min {} s; at 100 threads max {} s (public) vs {} s (enclave).",
            study::PUBLIC_MIN_S, study::ENCLAVE_MIN_S, study::PUBLIC_MAX_100_S, study::ENCLAVE_MAX_100_S);
    }
    for n in [1.0, 100.0] {
        for route in ["public", "secure"] {
            if let Some(r) = at(results, "local", route, n) {
                let _ = writeln!(md, "- Local load, {route}, {n} threads: min {} s, p50 {} s, p99 {} s, max {} s, {} images/s.",
                    plot::sig(r.min.med / 1e3), plot::sig(r.p50.med / 1e3), plot::sig(r.p99.med / 1e3), plot::sig(r.max.med / 1e3), plot::sig(r.ips.med));
            }
        }
    }
    if let Some(st) = results["start"].as_array().filter(|l| !l.is_empty()) {
        let m = |k: &str| med(st.iter().map(|t| f(&t[k])).collect());
        let _ = writeln!(md, "- Start: model server exec to Ping {} s (secure) / {} s (public); whole stack to /ready {} s (study: enclave {} s, Docker {} s).",
            plot::sig(m("secure_s")), plot::sig(m("public_s")), plot::sig(m("stack_s")), study::ENCLAVE_START_S, study::DOCKER_START_S);
    }
    if let Some(ch) = results["channel"].as_array().filter(|l| !l.is_empty()) {
        let best = ch.iter().max_by(|a, b| f(&a["bytes"]).total_cmp(&f(&b["bytes"])));
        if let Some(b) = best {
            let _ = writeln!(md, "- Channel, {} MiB messages: framed {} Gbit/s vs raw {} Gbit/s = **{:.0}%** of the raw socket (study: vsock {} Gbit/s = {:.1}% of TCP).",
                f(&b["bytes"]) / 1048576.0, plot::sig(f(&b["framed_bytes_per_s"]) * 8e-9), plot::sig(f(&b["raw_bytes_per_s"]) * 8e-9),
                f(&b["ratio"]) * 100.0, study::VSOCK_GBITS, study::VSOCK_SHARE_OF_TCP * 100.0);
        }
    }
    if let Some(l) = results["memory"]["processes"].as_array() {
        let items: Vec<String> = l.iter().map(|p| format!("{} {:.1} MiB (peak {:.1})", p["name"].as_str().unwrap_or("?"),
            f(&p["mean_load_kib"]) / 1024.0, f(&p["peak_kib"]) / 1024.0)).collect();
        let _ = writeln!(md, "- Memory under light mixed load: {} (study: standard {}-{} MiB, enclave {} MiB).", items.join(", "),
            study::STANDARD_MIB.0, study::STANDARD_MIB.1, study::ENCLAVE_MIB);
    }
    let peer_list = peers(results);
    for peer in peer_list.iter().filter_map(|p| p["name"].as_str()) {
        for n in [1.0, 10.0, 100.0] {
            let row = |t: &str| at(results, "peer", t, n);
            let Some(p) = row(peer) else { continue };
            let ours: Vec<String> = ["ours-public", "ours-secure"].iter().filter_map(|t| {
                let o = row(t)?;
                Some(format!("{} {} images/s ({:.2}x), p50 {} s", t.trim_start_matches("ours-"), plot::sig(o.ips.med), o.ips.med / p.ips.med, plot::sig(o.p50.med / 1e3)))
            }).collect();
            let clients = if n == 1.0 { "client thread" } else { "client threads" };
            let _ = writeln!(md, "- {cmp}, {n} {clients}: {peer} {} images/s, p50 {} s, max {} s; ours: {}.",
                plot::sig(p.ips.med), plot::sig(p.p50.med / 1e3), plot::sig(p.max.med / 1e3), ours.join("; "));
        }
    }
    if !peer_list.is_empty() {
        if let Some(e) = engine(cmp) {
            let _ = writeln!(md, "- Bare engine ({cmp}): {} images/s.", plot::sig(e));
        }
    }
    md.push('\n');

    for (exp, title, share) in [("local", "Local load", false), ("mixed", "Mixed-privacy sweep", true), ("net", "Internet-like load", false), ("peer", "Ours vs peer", false)] {
        if !runs(results, exp).is_empty() {
            let _ = writeln!(md, "## {title}\n");
            if exp == "net" {
                let _ = writeln!(md, "Link: {}.\n", meta["net_shape"].as_str().unwrap_or("?"));
            }
            sweep_table(&mut md, results, exp, share);
        }
    }
    if let Some(st) = results["start"].as_array().filter(|l| !l.is_empty()) {
        let _ = writeln!(md, "## Start time\n\n| trial | secure server s | public server s | stack to /ready s |\n|---|---|---|---|");
        for (i, t) in st.iter().enumerate() {
            let _ = writeln!(md, "| {} | {:.3} | {:.3} | {:.3} |", i + 1, f(&t["secure_s"]), f(&t["public_s"]), f(&t["stack_s"]));
        }
        md.push('\n');
    }
    if let Some(ch) = results["channel"].as_array().filter(|l| !l.is_empty()) {
        let _ = writeln!(md, "## Channel throughput\n\n| bytes | framed Gbit/s | raw Gbit/s | framed / raw |\n|---|---|---|---|");
        for c in ch {
            let _ = writeln!(md, "| {} | {:.2} | {:.2} | {:.0}% |", c["bytes"], f(&c["framed_bytes_per_s"]) * 8e-9, f(&c["raw_bytes_per_s"]) * 8e-9, f(&c["ratio"]) * 100.0);
        }
        md.push('\n');
    }
    if results["sealed"].is_object() {
        sealed_tables(&mut md, results);
    }
    let mut procs: Vec<Value> = results["memory"]["processes"].as_array().cloned().unwrap_or_default();
    procs.extend(results["peer"]["memory"].as_array().cloned().unwrap_or_default());
    if !procs.is_empty() {
        let _ = writeln!(md, "## Memory\n\n| process | mean RSS under light load MiB | peak RSS (VmHWM) MiB |\n|---|---|---|");
        for p in &procs {
            let _ = writeln!(md, "| {} | {:.1} | {:.1} |", p["name"].as_str().unwrap_or("?"), f(&p["mean_load_kib"]) / 1024.0, f(&p["peak_kib"]) / 1024.0);
        }
        if let Some(st) = results["start"].as_array().and_then(|l| l.first()) {
            if let Some(pk) = st["peak_at_ready"].as_array() {
                let items: Vec<String> = pk.iter().map(|p| format!("{} {:.1} MiB", p["name"].as_str().unwrap_or("?"), f(&p["peak_kib"]) / 1024.0)).collect();
                let _ = writeln!(md, "\nPeak RSS at /ready (first start trial): {}.", items.join(", "));
            }
        }
        if let Some(sz) = results["memory"]["sizes"].as_array() {
            let _ = writeln!(md, "\nSizes (study: enclave image {:.1} GB): {}.", study::IMAGE_BYTES / 1e9, sz.iter().map(|s| format!("{} {:.1} MiB", s["name"].as_str().unwrap_or("?"), f(&s["bytes"]) / 1048576.0)).collect::<Vec<_>>().join(", "));
        }
        md.push('\n');
    }
    let _ = writeln!(md, "## Figures\n");
    for (title, files) in figs {
        if files.is_empty() {
            continue;
        }
        let _ = writeln!(md, "### {title}\n");
        for file in files {
            let _ = writeln!(md, "![{title}]({file})\n");
        }
    }
    md
}

/// The seal/open steps, as results.json names them and as reported.
const SEAL_STEPS: [(&str, &str); 5] = [
    ("client_seal", "client seal"),
    ("gateway_open", "gateway open"),
    ("gateway_seal", "gateway seal"),
    ("client_open", "client open"),
    ("total", "total"),
];

/// Threads, and the three load targets of the sealed part, as reported.
const SEALED_TARGETS: [(&str, &str); 3] = [
    (crate::sealed::PLAIN, "plaintext, raw photo"),
    (crate::sealed::SEALED, "sealed, raw photo"),
    (crate::sealed::JSON2, "plaintext JSON batch of 2 (study)"),
];

fn sealed_model(results: &Value) -> String {
    let meta = &results["meta"];
    results["sealed"]["load"]["model_reported"].as_str().or(meta["model"].as_str()).unwrap_or("?").to_string()
}

/// Seal/open time per payload size (log-log), and the latencies (bars, log).
fn sealed_figures(dir: &Path, results: &Value) -> Result<Vec<String>, String> {
    let meta = &results["meta"];
    let sealed = &results["sealed"];
    let model = sealed_model(results);
    let mut files = Vec::new();
    if let Some(sizes) = sealed["seal_open"].as_array().filter(|l| !l.is_empty()) {
        let series: Vec<Series> = SEAL_STEPS
            .iter()
            .enumerate()
            .map(|(i, (key, label))| Series {
                name: label.to_string(),
                color: if *key == "total" { 7 } else { i },
                look: if *key == "total" { Look::Light } else { Look::Solid },
                points: sizes
                    .iter()
                    .map(|p| {
                        let q = &p["steps_us"][*key];
                        Pt { x: f(&p["bytes"]), y: f(&q["p50"]), lo: f(&q["p10"]), hi: f(&q["p90"]) }
                    })
                    .collect(),
            })
            .collect();
        let runs: Vec<u64> = sizes.iter().filter_map(|p| p["runs"].as_u64()).collect();
        let answer = sizes[0]["answer_json_bytes"].as_u64().unwrap_or(0);
        let response = sizes[0]["response_bytes"].as_u64().unwrap_or(0);
        let cap = caption_with(
            meta,
            "none (in-process)",
            &format!("median of {}-{} runs per size, bar p10-p90", runs.iter().min().unwrap_or(&0), runs.iter().max().unwrap_or(&0)),
            &format!("In-process, ohttp 0.7.2 on both sides (X25519, HKDF-SHA256, AES-128-GCM). Answer: {answer} bytes of JSON, padded to 4096 (sealed response {response} bytes)."),
        );
        plot::lines(&dir.join("sealed_seal_open.svg"), "Sealed requests: seal and open time per request size", &cap,
            &Axes { x_desc: "payload (the image), bytes (log)", y_desc: "microseconds (log)", log_x: true, log_y: true, int_x: false }, &series)?;
        files.push("sealed_seal_open.svg".to_string());
    }
    let mut bars = Vec::new();
    let att = &sealed["attestation"];
    if att.is_object() && att["ok"].as_u64().unwrap_or(0) > 0 {
        for (key, label, c) in [("get_ms", "GET /attestation", 2), ("verify_ms", "verify document", 4)] {
            let (p50, p99) = (f(&att[key]["p50"]), f(&att[key]["p99"]));
            bars.push(Bar { label: label.into(), value: p50, lo: p50, hi: p99, color: c });
        }
    }
    let rs = runs(results, "sealed");
    let threads: Vec<f64> = {
        let mut t: Vec<f64> = rs.iter().map(|r| r.threads as f64).collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    };
    for n in &threads {
        for (i, (name, _)) in SEALED_TARGETS.iter().enumerate() {
            if let Some(r) = rows(&rs, name, false).into_iter().find(|r| r.x == *n) {
                let short = ["plaintext", "sealed", "JSON x2"][i];
                bars.push(Bar { label: format!("{short}, {n}"), value: r.p50.med, lo: r.p50.med, hi: r.p99.med, color: [0, 1, 7][i] });
            }
        }
    }
    if !bars.is_empty() {
        let trials = meta["trials"].as_u64().unwrap_or(0);
        let cap = caption_with(
            meta,
            &model,
            &format!("bar p50, whisker to p99 (load rows: medians of {trials} trials)"),
            "Attestation: through parent, model server and its NSM, one at a time; verify: sealed_client::verify alone. Load rows: route, client threads;\none photo per request (plaintext image/jpeg, or sealed), JSON x2 = the study's request of 2 photos; all POST /predict-secure/, one connection each.",
        );
        plot::bars(&dir.join("sealed_latency.svg"), "Sealed requests: latency", &cap, "milliseconds (log)", "ms", &bars)?;
        files.push("sealed_latency.svg".to_string());
    }
    Ok(files)
}

fn sealed_csv(dir: &Path, results: &Value) -> Result<(), String> {
    let sealed = &results["sealed"];
    if let Some(sizes) = sealed["seal_open"].as_array() {
        let mut s = String::from("bytes,runs,request_bytes,response_bytes,step,p10_us,p50_us,p90_us,mean_us\n");
        for p in sizes {
            for key in SEAL_STEPS.iter().map(|(k, _)| *k).chain(["client_bhttp_encode"]) {
                let q = &p["steps_us"][key];
                let _ = writeln!(s, "{},{},{},{},{key},{:.1},{:.1},{:.1},{:.1}", p["bytes"], p["runs"], p["request_bytes"], p["response_bytes"],
                    f(&q["p10"]), f(&q["p50"]), f(&q["p90"]), f(&q["mean"]));
            }
        }
        std::fs::write(dir.join("sealed_seal_open.csv"), s).map_err(|e| format!("sealed_seal_open.csv: {e}"))?;
    }
    let att = &sealed["attestation"];
    if att.is_object() {
        let mut s = String::from("what,n,min_ms,p50_ms,p90_ms,p99_ms,max_ms,mean_ms\n");
        for key in ["get_ms", "verify_ms"] {
            let q = &att[key];
            let _ = writeln!(s, "{key},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}", q["n"], f(&q["min"]), f(&q["p50"]), f(&q["p90"]), f(&q["p99"]), f(&q["max"]), f(&q["mean"]));
        }
        std::fs::write(dir.join("sealed_attestation.csv"), s).map_err(|e| format!("sealed_attestation.csv: {e}"))?;
    }
    Ok(())
}

fn sealed_tables(md: &mut String, results: &Value) {
    let sealed = &results["sealed"];
    let _ = writeln!(md, "## Sealed requests\n\nParent {}; trust: {}.\n", sealed["parent"].as_str().unwrap_or("?"), sealed["trust"].as_str().unwrap_or("?"));
    let att = &sealed["attestation"];
    if att.is_object() {
        let _ = writeln!(md, "Attestation: {} of {} requests answered and verified (errors: {}); document {:.0} bytes.\n",
            att["ok"], att["sent"], att["errors"], f(&att["document_bytes"]["p50"]));
        if let Some(e) = att["first_refusal"].as_str() {
            let _ = writeln!(md, "First refusal: {e}\n");
        }
        let _ = writeln!(md, "| | n | min ms | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|");
        for (key, label) in [("get_ms", "`GET /attestation?nonce=` (parent, model server, NSM)"), ("verify_ms", "`sealed_client::verify` of one document")] {
            let q = &att[key];
            let _ = writeln!(md, "| {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |", q["n"], f(&q["min"]), f(&q["p50"]), f(&q["p90"]), f(&q["p99"]), f(&q["max"]));
        }
        md.push('\n');
    }
    if let Some(sizes) = sealed["seal_open"].as_array().filter(|l| !l.is_empty()) {
        let _ = writeln!(md, "Seal and open, in-process (median of the runs, microseconds; the answer is {} bytes of JSON, sealed response {} bytes):\n",
            sizes[0]["answer_json_bytes"], sizes[0]["response_bytes"]);
        let _ = writeln!(md, "| payload bytes | runs | sealed request bytes | client seal | (of which BHTTP encoding) | gateway open | gateway seal | client open | total |\n|---|---|---|---|---|---|---|---|---|");
        for p in sizes {
            let q = |k: &str| plot::sig(f(&p["steps_us"][k]["p50"]));
            let _ = writeln!(md, "| {} | {} | {} | {} | {} | {} | {} | {} | {} |", p["bytes"], p["runs"], p["request_bytes"],
                q("client_seal"), q("client_bhttp_encode"), q("gateway_open"), q("gateway_seal"), q("client_open"), q("total"));
        }
        md.push('\n');
    }
    let rs = runs(results, "sealed");
    if !rs.is_empty() {
        let l = &sealed["load"];
        let _ = writeln!(md, "Plaintext vs sealed on `/predict-secure/`, model {} (top class {}), photo {} bytes; requests per client {} at threads {}; medians of {} trials:\n",
            sealed_model(results), l["top_class"], l["image_bytes"], l["requests_per_client"], l["threads"], l["trials"]);
        let _ = writeln!(md, "| request | clients | ok / sent | errors | p50 ms | p90 ms | p99 ms | images/s |\n|---|---|---|---|---|---|---|---|");
        for (name, label) in SEALED_TARGETS {
            for r in rows(&rs, name, false) {
                let _ = writeln!(md, "| {label} | {} | {} / {} | {} | {} | {} | {} | {} |", r.x as u64, r.ok, r.sent, fmt_errors(&r.errors),
                    plot::sig(r.p50.med), plot::sig(r.p90.med), plot::sig(r.p99.med), plot::sig(r.ips.med));
            }
        }
        md.push('\n');
    }
}

/// `bench plot DIR`: redraws everything from DIR/results.json.
pub fn replot(dir: &Path) -> Result<(), String> {
    let path = dir.join("results.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    write_all(dir, &v)?;
    eprintln!("bench: wrote {}", dir.join("summary.md").display());
    Ok(())
}
