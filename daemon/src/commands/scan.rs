//! `tollgate scan`: files, standard input or the staged changes, in four report formats.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Loaded;
use crate::redact::rules::Category;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScanFormat {
    Text,
    Json,
    Sarif,
    Gitlab,
}

/// What `tollgate scan` was asked.
pub struct Scan<'a> {
    pub paths: &'a [PathBuf],
    pub staged: bool,
    pub secrets_only: bool,
    /// Leave out findings whose vendor checksum fails.
    pub skip_fakes: bool,
    pub format: ScanFormat,
}

/// `tollgate scan --kinds`: each kind the rules find, its category and how many rules find it.
pub fn kinds(loaded: &Loaded, rules: &[(String, String)], format: ScanFormat) -> anyhow::Result<ExitCode> {
    let scanner = crate::redact::load_scanner(&loaded.config.redaction, rules)?;
    let mut kinds: std::collections::BTreeMap<&str, (Category, usize)> = std::collections::BTreeMap::new();
    for r in scanner.rules() {
        kinds.entry(&r.kind).or_insert((r.category, 0)).1 += 1;
    }
    if format == ScanFormat::Json {
        let list: Vec<_> = kinds
            .iter()
            .map(|(kind, (category, rules))| serde_json::json!({"kind": kind, "category": category, "rules": rules}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for (kind, (category, rules)) in &kinds {
            let category = if *category == Category::Secret { "secret" } else { "personal" };
            println!("{kind:<40} {category:<9} {rules}");
        }
        eprintln!("{} kinds; turn one off with redaction.off_kinds", kinds.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(loaded: &Loaded, rules: &[(String, String)], scan: &Scan<'_>) -> anyhow::Result<ExitCode> {
    use crate::redact::report;
    let Scan { paths, staged, secrets_only, skip_fakes, format } = *scan;
    let started = crate::utc::now_ms();
    let scanner = crate::redact::load_scanner_where(&loaded.config.redaction, rules, &|r| {
        !secrets_only || r.category == Category::Secret
    })?;
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
    if skip_fakes {
        findings.retain(|f| f.checksum != Some("invalid"));
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
