//! Every command line the docs show parses: its subcommands and flags exist. A user copies these
//! lines; `deploy/README.md` once told them to run `o365-collector admin …`, which never existed.
//!
//! Commands are taken from code (fenced blocks, indented blocks and inline spans) in README.md,
//! deploy/**/README.md and docs/*.md: `o365-collector …`, `…/o365-collector …`, `o365-emulator …`
//! and `cargo run [--release] -- …`. A complete line must parse as is (`try_parse_from`); a
//! synopsis (`[optional]`, `a|b`, `…`, `<placeholder>`) must name only subcommands and flags that
//! exist where it uses them.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use o365_collector::cli::Cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents whose commands are checked.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p);
            }
        }
    }
    walk(&root().join("deploy"), &mut files);
    walk(&root().join("docs"), &mut files);
    files
}

/// The code of a markdown text, with the line each piece starts on: fenced blocks and indented
/// blocks line by line (continuations joined), inline spans whole.
fn code_pieces(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let code = if fenced {
            Some(line)
        } else {
            line.strip_prefix("    ")
                .filter(|l| !l.trim_start().starts_with(['-', '*']))
        };
        if let Some(code) = code {
            let (start, mut joined) = pending.take().unwrap_or((n, String::new()));
            match code.trim_end().strip_suffix('\\') {
                Some(head) => {
                    joined.push_str(head);
                    joined.push(' ');
                    pending = Some((start, joined));
                }
                None => {
                    joined.push_str(code);
                    out.push((start, joined));
                }
            }
            continue;
        }
        // Inline spans outside code blocks.
        let mut rest = line;
        while let Some(a) = rest.find('`') {
            let after = &rest[a + 1..];
            let Some(b) = after.find('`') else { break };
            out.push((n, after[..b].replace("\\|", "|")));
            rest = &after[b + 1..];
        }
    }
    out
}

/// Shell words of a command, up to the first operator or comment; quotes removed.
fn words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in cmd.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    let stop = out
        .iter()
        .position(|w| {
            w.starts_with('#')
                || matches!(w.as_str(), "|" | "||" | "&&" | ";" | "&")
                || w.starts_with('>')
                || w.starts_with("2>")
                || w.starts_with('<') && !w.ends_with('>')
        })
        .unwrap_or(out.len());
    out.truncate(stop);
    out
}

/// A documented invocation: which program, its arguments, where it was found.
#[derive(Debug)]
struct Invocation {
    emulator: bool,
    args: Vec<String>,
    at: String,
}

/// The invocations of our binaries in one piece of code. A program counts only where a command
/// starts (not `kubectl -n o365-collector …`).
fn invocations(piece: &str, at: &str) -> Vec<Invocation> {
    let mut out = Vec::new();
    // Split on shell separators first: each part is one command (`a|b` without spaces is a
    // synopsis' alternatives, not a pipe).
    for part in piece
        .split(" | ")
        .flat_map(|p| p.split(';'))
        .flat_map(|p| p.split("&&"))
    {
        let mut w = words(part.trim_start_matches(['$', ' ']).trim());
        // `sudo`, env assignments and `/usr/bin/time -v` in front of the program.
        while let Some(first) = w.first() {
            let skip = match first.as_str() {
                "sudo" | "exec" => 1,
                "/usr/bin/time" | "time" => {
                    1 + w.iter().skip(1).take_while(|a| a.starts_with('-')).count()
                }
                f if f.contains('=') && !f.starts_with('-') => 1,
                _ => 0,
            };
            if skip == 0 {
                break;
            }
            w.drain(..skip.min(w.len()));
        }
        let Some(program) = w.first() else { continue };
        let name = program.rsplit('/').next().unwrap_or(program);
        let (emulator, args) = match name {
            "o365-collector" => (false, w[1..].to_vec()),
            "o365-emulator" => (true, w[1..].to_vec()),
            "cargo" if w.get(1).map(String::as_str) == Some("run") => {
                let Some(dash) = w.iter().position(|a| a == "--") else {
                    continue;
                };
                // `cargo run -p o365-emulator -- …` runs the emulator binary.
                let emulator = w[..dash].iter().any(|a| a == "o365-emulator");
                (emulator, w[dash + 1..].to_vec())
            }
            _ => continue,
        };
        // A bare name (`the o365-collector Secret`) is not a command line.
        if args.is_empty() {
            continue;
        }
        out.push(Invocation {
            emulator,
            args,
            at: at.to_string(),
        });
    }
    out
}

/// A synopsis rather than a complete line: optional parts, alternatives, elisions, placeholders.
fn is_synopsis(args: &[String]) -> bool {
    args.iter().any(|a| {
        a.contains('[')
            || a.contains('…')
            || a.contains("...")
            || (a.contains('|') && !a.contains('='))
            || (a.starts_with('<') && a.ends_with('>'))
    })
}

/// Checks a synopsis against the command tree: every subcommand named exists, every flag exists
/// on the (sub)command it follows or is global.
fn check_synopsis(root: &clap::Command, args: &[String]) -> Result<(), String> {
    let mut path: Vec<&clap::Command> = vec![root];
    let mut i = 0;
    while i < args.len() {
        let raw = args[i].trim_matches(|c| c == '[' || c == ']');
        i += 1;
        if raw.is_empty() || raw.contains('…') || raw.contains("...") {
            continue;
        }
        let cmd = *path.last().unwrap();
        if let Some(flag) = raw.strip_prefix("--") {
            let (name, inline_value) = match flag.split_once('=') {
                Some((n, _)) => (n, true),
                None => (flag, false),
            };
            if matches!(name, "help" | "version") {
                continue;
            }
            let arg = path
                .iter()
                .rev()
                .flat_map(|c| c.get_arguments())
                .find(|a| a.get_long() == Some(name))
                .ok_or_else(|| format!("`{}` has no flag --{name}", cmd.get_name()))?;
            if !inline_value && arg.get_action().takes_values() {
                i += 1; // its value
            }
            continue;
        }
        if raw.starts_with('-') || raw.starts_with('<') {
            continue;
        }
        if cmd.has_subcommands() {
            let names: Vec<&str> = raw.split('|').collect();
            let mut next = None;
            for n in &names {
                let sub = cmd
                    .find_subcommand(n)
                    .ok_or_else(|| format!("`{}` has no subcommand `{n}`", cmd.get_name()))?;
                next.get_or_insert(sub);
            }
            path.push(next.unwrap());
        }
    }
    Ok(())
}

fn check(inv: &Invocation) -> Result<(), String> {
    // `o365-emulator` takes the flags of `o365-collector emulator`.
    let prefix: &[&str] = if inv.emulator {
        &["o365-collector", "emulator"]
    } else {
        &["o365-collector"]
    };
    let argv: Vec<String> = prefix
        .iter()
        .map(|s| s.to_string())
        .chain(inv.args.iter().cloned())
        .collect();
    if is_synopsis(&inv.args) {
        return check_synopsis(&Cli::command(), &argv[1..]);
    }
    match Cli::try_parse_from(argv).map(|_| ()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => Ok(()),
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => Ok(()),
        Err(e) => Err(e.to_string().lines().next().unwrap_or("").to_string()),
    }
}

fn all_invocations() -> Vec<Invocation> {
    let mut out = Vec::new();
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        for (line, piece) in code_pieces(&text) {
            out.extend(invocations(&piece, &format!("{rel}:{line}")));
        }
    }
    out
}

#[test]
fn every_documented_command_line_parses() {
    // Flags may also come from the environment; the docs' lines must parse without it.
    for var in [
        "O365_CONFIG",
        "O365_LOG_FORMAT",
        "O365_ADMIN_URL",
        "O365_ADMIN_TOKEN",
    ] {
        assert!(
            std::env::var_os(var).is_none(),
            "unset {var} to run this test: it would hide a missing flag"
        );
    }
    let all = all_invocations();
    let bad: Vec<String> = all
        .iter()
        .filter_map(|inv| {
            check(inv)
                .err()
                .map(|e| format!("{}: `{}`: {e}", inv.at, inv.args.join(" ")))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "documented commands that do not parse:\n{}",
        bad.join("\n")
    );
    // The extraction finds the commands the README is built around, so it cannot pass by
    // finding nothing.
    let shown = |needle: &[&str]| {
        all.iter().any(|inv| {
            inv.args
                .iter()
                .map(String::as_str)
                .eq(needle.iter().copied())
        })
    };
    assert!(shown(&["demo"]), "the README's first command was not found");
    assert!(
        shown(&["check-config", "--config", "config.yaml"]),
        "check-config was not found"
    );
    let files: std::collections::BTreeSet<&str> = all
        .iter()
        .map(|inv| inv.at.split(':').next().unwrap())
        .collect();
    assert!(
        files.contains("README.md") && files.contains("deploy/README.md"),
        "{files:?}"
    );
    assert!(all.len() >= 20, "only {} commands found", all.len());
}

/// The check is not a rubber stamp: made-up subcommands and flags, in full lines and synopses,
/// are refused; kubectl's namespace argument is not taken for a command.
#[test]
fn made_up_commands_are_refused() {
    let bad = [
        "o365-collector admin subscriptions list",
        "o365-collector run --cfg config.yaml",
        "o365-collector subscriptions list|start|restart [CONTENT_TYPE]",
        "o365-collector map [--fmt ecs] [FILE]",
        "cargo run --release -- demo --recs 5",
        "o365-emulator --listn 127.0.0.1:1",
    ];
    for cmd in bad {
        let inv = invocations(cmd, "t");
        assert_eq!(inv.len(), 1, "{cmd}");
        assert!(check(&inv[0]).is_err(), "accepted: {cmd}");
    }
    let good = [
        "o365-collector subscriptions list|start|stop [CONTENT_TYPE]",
        "o365-collector demo --records 100000",
        "/usr/bin/time -v target/release/o365-collector demo --records 100000   # peak RSS",
    ];
    for cmd in good {
        let inv = invocations(cmd, "t");
        assert_eq!(inv.len(), 1, "{cmd}");
        check(&inv[0]).unwrap_or_else(|e| panic!("{cmd}: {e}"));
    }
    assert!(
        invocations(
            "kubectl -n o365-collector port-forward statefulset/o365-collector 9090",
            "t"
        )
        .is_empty()
    );
}
