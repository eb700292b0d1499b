//! `tollgate scan`: files, standard input or the staged changes, in four report formats.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Loaded;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Text,
    Json,
    Sarif,
    Gitlab,
}

pub fn run(
    loaded: &Loaded,
    rules: &[(String, String)],
    paths: &[PathBuf],
    staged: bool,
    format: ScanFormat,
) -> anyhow::Result<ExitCode> {
    use crate::redact::report;
    let started = crate::utc::now_ms();
    let scanner = crate::redact::load_scanner(&loaded.config.redaction, rules)?;
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    if staged {
        let repo = std::env::current_dir()?;
        for (path, content, lines) in crate::git::staged(&repo)? {
            findings.extend(report::scan_text(&scanner, &path, &content, &|l| lines.contains(&l)));
        }
    } else {
        let (stdin, files): (Vec<&PathBuf>, Vec<&PathBuf>) = paths.iter().partition(|p| p.as_os_str() == "-");
        if !stdin.is_empty() {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read standard input")?;
            findings.extend(report::scan_text(&scanner, "-", &buf, &|_| true));
        }
        let files: Vec<PathBuf> = files.into_iter().cloned().collect();
        let roots = if files.is_empty() && stdin.is_empty() { vec![PathBuf::from(".")] } else { files };
        let mut all = Vec::new();
        report::collect_files(&roots, &mut all)?;
        let (found, skip) = report::scan_files(&scanner, &all);
        findings.extend(found);
        skipped = skip;
    }
    for s in &skipped {
        eprintln!("skipped {s}");
    }
    match format {
        ScanFormat::Text => {
            print!("{}", report::text(&findings));
            if !findings.is_empty() {
                eprintln!(
                    "{} finding(s). Remove them, move them to the keychain or an environment variable, or mark a line that is not \
                     a secret with `tollgate:allow`.",
                    findings.len()
                );
            }
        }
        ScanFormat::Json => println!("{}", serde_json::to_string_pretty(&findings)?),
        ScanFormat::Sarif => println!("{}", serde_json::to_string_pretty(&report::sarif(&findings, &scanner))?),
        ScanFormat::Gitlab => {
            let (s, e) = (report::report_time(started), report::report_time(crate::utc::now_ms()));
            println!("{}", serde_json::to_string_pretty(&report::gitlab(&findings, &s, &e))?)
        }
    }
    Ok(if findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
