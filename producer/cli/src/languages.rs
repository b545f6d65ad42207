//! `quayside languages`: the language table the configuration gives (the built-in one unless
//! `languages.*` is set), so a user sees the image, the build and run commands and the options
//! they get (`-O2`, `-lm`, `-std=...`) without reading worker config.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quayside_common::config::{Config, LanguageConfig};
use quayside_common::Limits;
use serde::Serialize;

use crate::terminal;

/// One language as `--json` prints it: its config and the limits a job gets by default.
#[derive(Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    config: &'a LanguageConfig,
    default_limits: Option<Limits>,
}

/// The table as text (or JSON with `json`).
pub(crate) fn render(cfg: &Config, json: bool) -> anyhow::Result<String> {
    let limits = |lang: &LanguageConfig| lang.default_limits(&cfg.limits).ok();
    if json {
        let table: BTreeMap<&str, Entry<'_>> = cfg
            .languages
            .iter()
            .map(|(name, config)| {
                let entry = Entry {
                    config,
                    default_limits: limits(config),
                };
                (name.as_str(), entry)
            })
            .collect();
        return Ok(terminal::json(&table)?);
    }
    let mut out = String::new();
    for (name, lang) in &cfg.languages {
        let none = |cmd: &str| {
            if cmd.trim().is_empty() {
                "(none)".to_owned()
            } else {
                cmd.to_owned()
            }
        };
        let sources = format!(
            "*.{} (entry file {})",
            lang.source_extension, lang.entry_file
        );
        writeln!(
            out,
            "{}  {}",
            terminal::line(name),
            terminal::line(&lang.image)
        )?;
        for (what, value) in [
            ("sources", sources),
            ("build", none(&lang.build_command)),
            ("run", none(&lang.run_command)),
            ("compile", none(&lang.compile_only_command)),
        ] {
            writeln!(out, "    {what:<8} {}", terminal::line(&value))?;
        }
        if let Some(l) = limits(lang) {
            writeln!(
                out,
                "    {:<8} run {} ms, build {} ms, memory {} MiB, cpu {} millicores, pids {}, output {} KiB per stream",
                "limits",
                l.run_wall_time_ms,
                l.compile_wall_time_ms,
                l.memory_bytes >> 20,
                l.cpu_millicores,
                l.pids,
                l.output_bytes >> 10
            )?;
        }
    }
    out.push_str(
        "\n{options} is the job's compiler_options, {sources} its source files of the language, \
         {entry} its entry file; a run command gets the job's args as \"$@\".\n",
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_shows_the_options_a_user_gets() {
        let cfg = Config::load(None).expect("defaults");
        let text = render(&cfg, false).expect("render");
        for expected in [
            "c  quayside/runner-c:",
            "gcc -O2 -pipe -std=gnu17 {options} -o main {sources} -lm",
            "g++ -O2 -pipe -std=gnu++17",
            "python  quayside/runner-python:",
            "    build    (none)",
            "memory 512 MiB",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| !l.starts_with(' ') && !l.is_empty())
                .count(),
            cfg.languages.len() + 1,
            "one heading per language, and the footnote\n{text}"
        );
    }

    #[test]
    fn json_carries_every_command_and_the_default_limits() {
        let cfg = Config::load(None).expect("defaults");
        let v: serde_json::Value =
            serde_json::from_str(&render(&cfg, true).expect("render")).expect("json");
        assert_eq!(
            v["c"]["build_command"],
            "gcc -O2 -pipe -std=gnu17 {options} -o main {sources} -lm"
        );
        assert_eq!(v["go"]["default_limits"]["memory_bytes"], 512 << 20);
        assert_eq!(v["python"]["run_command"], r#"python3 {entry} "$@""#);
    }

    #[test]
    fn an_operators_command_cannot_reach_the_terminal_raw() {
        let mut cfg = Config::load(None).expect("defaults");
        let c = cfg.languages.get_mut("c").expect("c");
        c.build_command = "gcc \x1b[2J -o main {sources}".into();
        let text = render(&cfg, false).expect("render");
        assert!(!text.contains('\x1b'), "{text:?}");
    }
}
