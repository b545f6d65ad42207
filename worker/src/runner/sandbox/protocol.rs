//! The in-sandbox protocol: the wrapper script a sandbox runs, what the worker writes to its
//! stdin, and the end-of-build marker the worker reads back.
//!
//! The worker writes one header line to the wrapper's stdin (`<nonce> <archive bytes>`), then
//! the archive, then the job's stdin. The wrapper unpacks the archive into `/work`, runs the
//! build (or compile-only) step with all its output on stdout, prints `<nonce>:<status>` on
//! stdout, and then runs the program with the rest of stdin and the job's args. The nonce is
//! random per attempt and reaches the wrapper only through stdin, so the build step cannot
//! forge the marker, and the worker can time and cap the build and the run apart.

use std::collections::{BTreeMap, BTreeSet};

use quayside_common::config::LanguageConfig;
use quayside_common::JobKind;

use super::WORK_DIR;

/// Exit status of the wrapper when its stdin header is missing (the worker went away).
pub(crate) const EXIT_NO_HEADER: i64 = 120;
/// Exit status of the wrapper when the archive does not unpack (e.g. `/work` is full).
pub(crate) const EXIT_UNPACK: i64 = 121;

/// Quotes `s` for a POSIX shell: always one single-quoted word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Shell-quoted words joined by spaces.
fn quote_all(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fills `{options}`, `{sources}` and `{entry}` in a language command in one pass, so text
/// coming from a job (an option or a file name) is never expanded again.
pub fn expand(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        match vars.iter().find(|(name, _)| {
            after
                .strip_prefix('{')
                .and_then(|a| a.strip_prefix(name))
                .is_some_and(|a| a.starts_with('}'))
        }) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &after[name.len() + 2..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The wrapper of a sandbox that gets its files and nonce through stdin ([`stdin_payload`]):
/// read the header, unpack the archive into `/work`, then run `body` ([`wrapper_body`]), then
/// mark the end of stderr ([`STDERR_END`]).
pub fn stdin_wrapper(body: &str) -> String {
    format!(
        "IFS=' ' read -r nonce size end || exit {EXIT_NO_HEADER}\n\
         if [ \"$size\" -gt 0 ]; then head -c \"$size\" | tar -xf - -C {WORK_DIR} 2>&1 || exit {EXIT_UNPACK}; fi\n\
         {body}{STDERR_END}exit \"$s\"\n"
    )
}

/// What `{options}`, `{sources}` and `{entry}` stand for in `lang`'s commands, quoted.
fn vars(
    lang: &LanguageConfig,
    options: &[String],
    files: &BTreeMap<String, String>,
) -> [(&'static str, String); 3] {
    let sources = lang.source_files(files);
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    [
        ("options", quote_all(&options)),
        ("sources", quote_all(&sources)),
        ("entry", shell_quote(lang.entry_file_for(files))),
    ]
}

/// The build and run commands of `lang` for `files`, with `{options}`, `{sources}` and
/// `{entry}` filled in (a checker's, which the tests mode runs in its own folder).
pub fn build_and_run(
    lang: &LanguageConfig,
    options: &[String],
    files: &BTreeMap<String, String>,
) -> (String, String) {
    let vars = vars(lang, options, files);
    (
        expand(&lang.build_command, &vars),
        expand(&lang.run_command, &vars),
    )
}

/// The part of the wrapper every backend shares, run once `/work` holds the job's files and
/// `$nonce` is set: the build (or compile-only) step, the marker, then the program. How the
/// files and the nonce get there is the backend's business (stdin for Docker, a ConfigMap for
/// Kubernetes). `None` when the language has no command for `kind`.
pub fn wrapper_body(
    lang: &LanguageConfig,
    kind: JobKind,
    options: &[String],
    files: &BTreeMap<String, String>,
    tests: Option<&super::tests_mode::TestPlan>,
) -> Option<String> {
    let vars = vars(lang, options, files);
    let (step, run) = match kind {
        JobKind::Compile => (lang.compile_only_command.as_str(), None),
        JobKind::Run => (lang.build_command.as_str(), Some(lang.run_command.as_str())),
    };
    if step.trim().is_empty() && run.is_none_or(|r| r.trim().is_empty()) {
        return None;
    }
    let mut script = String::new();
    if tests.is_some() {
        script.push_str(&super::tests_mode::helper_check());
    }
    if step.trim().is_empty() {
        script.push_str("s=0\n");
    } else {
        // The step never sees the program's stdin, and all its output is on stdout.
        script.push_str(&format!(
            "(\n{}\n) </dev/null 2>&1\ns=$?\n",
            expand(step, &vars)
        ));
    }
    script.push_str("printf '%s:%d\\n' \"$nonce\" \"$s\"\n[ \"$s\" -eq 0 ] || exit \"$s\"\n");
    match run {
        Some(run) if !run.trim().is_empty() => {
            let run = expand(run, &vars);
            script.push_str(&match tests {
                Some(plan) => plan.script(&run),
                None => measured_run(&run),
            });
        }
        Some(_) => return None,
        None => script.push_str("r=\n"),
    }
    script.push_str(END_MARKER);
    Some(script)
}

/// Where the runner images install `quayside-run` (deploy/images/base/quayside-run.c).
pub const HELPER: &str = "/usr/local/bin/quayside-run";

/// Prints the end marker, `<end nonce>:<status> <report>` (the report empty when there is
/// none), and leaves the status in `$s` for the backend's own ending.
const END_MARKER: &str = "printf '%s:%d %s\\n' \"$end\" \"$s\" \"$r\"\n";

/// After the end marker, on stderr: `<end nonce>:<OOM kills>`, the memory cgroup's count over
/// the sandbox's life (cgroup v1 or v2; `-1` where neither file is readable), after which the
/// program's stderr is complete (`phases::settled`). Only where stdout and stderr are two
/// streams (Docker's attach; a pod log is one). Only shell builtins: this is on every job's
/// path.
const STDERR_END: &str = "o=-1\n\
    for f in /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; do\n\
    [ -r \"$f\" ] || continue\n\
    while read -r k v; do [ \"$k\" != oom_kill ] || o=$v; done <\"$f\"\n\
    break\n\
    done\n\
    printf '%s:%s\\n' \"$end\" \"$o\" >&2\n";

/// Runs the program (`run`, a shell command using `"$@"`) under [`HELPER`], which reports its
/// cpu time and peak memory on a descriptor of its own (fd 3, captured in `$r`, never
/// inherited by the program), while the program keeps the wrapper's stdin, stdout and stderr.
/// Sets `$s` to the program's status as a shell gives it (its exit code, or 128 + the signal
/// that killed it). An image without the helper (an operator's own) runs the program
/// directly, with no report.
fn measured_run(run: &str) -> String {
    format!(
        "if [ -x {HELPER} ]; then\n\
         {{ r=$({HELPER} --report-fd 3 -- /bin/sh -c {cmd} quayside \"$@\" 3>&1 1>&4 4>&-); }} 4>&1\n\
         h=$?\n\
         case $r in\n\
         'exit=- signal='*) s=${{r#*signal=}}; s=$((128 + ${{s%% *}})) ;;\n\
         exit=*) s=${{r#exit=}}; s=${{s%% *}} ;;\n\
         *) s=$h; r= ;;\n\
         esac\n\
         else\n(\n{run}\n)\ns=$?\nr=\nfi\n",
        cmd = shell_quote(&format!("\n{run}\n")),
    )
}

/// Where the wrapper's execute-only copy of the shell lives while it starts.
const SHELL_COPY: &str = "/work/.quayside-sh";

/// How the wrapper shell keeps the job out of its memory.
///
/// The job runs as the same uid beneath the wrapper, so it could `ptrace` it or open its
/// `/proc/<pid>/mem`, `environ` or `fd`: read the marker nonces, rewrite what it reports. A
/// process that executes a file it cannot read is marked not dumpable by the kernel, and only
/// `CAP_SYS_PTRACE` reaches into such a process: the prelude therefore re-executes the shell
/// from an execute-only copy of itself (mode 0111) before anything else runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapperShell {
    /// Re-execute from the execute-only copy (a Linux kernel, e.g. runc).
    Undumpable,
    /// Try the copy first and re-execute only if it runs, else run in place: for runtimes
    /// not known in advance (a Kubernetes `RuntimeClass`), since gVisor refuses to execute an
    /// unreadable file.
    UndumpableIfSupported,
    /// Run in place: gVisor, whose own kernel keeps the job out of the wrapper.
    Plain,
}

/// The command a sandbox runs `script` with: `sh -c <prelude> quayside <script>`, the job's
/// args following as the script's positional parameters. See [`WrapperShell`].
pub fn sandbox_command(script: String, shell: WrapperShell) -> Vec<String> {
    // Every step is a shell builtin but the copy and its removal: each process started here
    // is on every job's latency.
    let reexec = "umask 022; exec \"$w\" -c \"rm -f $w\n$s\" \"$0\" \"$@\"";
    let copy = "umask 0666; cp /bin/sh \"$w\" 2>/dev/null";
    let start = match shell {
        WrapperShell::Undumpable => format!("{copy} && {{ {reexec}; }}\nrm -f \"$w\"\n"),
        WrapperShell::UndumpableIfSupported => {
            format!("if {copy} && \"$w\" -c : 2>/dev/null; then {reexec}; fi\nrm -f \"$w\"\n")
        }
        WrapperShell::Plain => return vec!["sh".into(), "-c".into(), script, "quayside".into()],
    };
    let prelude = format!("w={SHELL_COPY}\ns=$1\nshift\n{start}umask 022\neval \"$s\"\n");
    vec!["sh".into(), "-c".into(), prelude, "quayside".into(), script]
}

/// What a warm container runs before its job is known: read `<length>\n`, then that many
/// bytes of script, and run it. Nothing in it is job-specific; [`stub_header`] is.
const STUB: &str = "IFS=' ' read -r n || exit 120\ns=$(head -c \"$n\")\neval \"$s\"\n";

/// The command of a warm container: [`sandbox_command`] with the [`STUB`] as its script, so
/// the prelude (the undumpable shell) runs before anything is read, as on the cold path.
pub fn stub_command(shell: WrapperShell) -> Vec<String> {
    sandbox_command(STUB.to_owned(), shell)
}

/// What the worker writes to a warm container's stdin before [`stdin_payload`]: the length of
/// the job's script, a newline, and the script: the job's `args` set as its positional
/// parameters (a cold container gets them as its command's arguments), then `script`
/// ([`stdin_wrapper`]). GNU `head -c` reads no further than the script from the pipe.
pub fn stub_header(args: &[String], script: &str) -> Vec<u8> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let script = format!("set -- {}\n{script}", quote_all(&words));
    let mut header = format!("{}\n", script.len()).into_bytes();
    header.extend_from_slice(script.as_bytes());
    header
}

/// The longest single argument any `exec` of [`sandbox_command`] passes for `script`: the
/// script itself, which the prelude passes again behind the removal of its shell copy.
pub fn longest_argument(script: &str, shell: WrapperShell) -> usize {
    let reexec = format!("rm -f {SHELL_COPY}\n").len() + script.len();
    sandbox_command(String::new(), shell)
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(reexec)
}

/// Why the wrapper ended before printing its marker, from its exit status.
pub fn wrapper_failure(exit_code: i64) -> &'static str {
    match exit_code {
        EXIT_NO_HEADER => "the sandbox got no input header",
        EXIT_UNPACK => "the job files did not unpack into /work",
        super::tests_mode::EXIT_NO_HELPER => {
            "the runner image has no /usr/local/bin/quayside-run, which jobs with tests need \
             (build it on deploy/images/base)"
        }
        _ => "the sandbox ended before the build step finished",
    }
}

/// The job's files as a tar archive, parent folders included, owned by `uid:gid`.
///
/// # Errors
/// A file name the tar format refuses.
pub fn archive(files: &BTreeMap<String, String>, uid: u32, gid: u32) -> std::io::Result<Vec<u8>> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(mtime);
        h
    };
    let dirs: BTreeSet<&str> = files
        .keys()
        .flat_map(|f| f.match_indices('/').map(move |(i, _)| &f[..i]))
        .collect();
    let mut tar = tar::Builder::new(Vec::new());
    for dir in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, std::io::empty())?;
    }
    for (name, text) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        tar.append_data(&mut h, name, text.as_bytes())?;
    }
    tar.into_inner()
}

/// What the worker writes to the wrapper's stdin: header line (build marker nonce, archive
/// size, end marker nonce), archive (may be empty), stdin.
pub fn stdin_payload(nonce: &str, archive: &[u8], end_nonce: &str, stdin: &str) -> Vec<u8> {
    let mut payload = format!("{nonce} {} {end_nonce}\n", archive.len()).into_bytes();
    payload.extend_from_slice(archive);
    payload.extend_from_slice(stdin.as_bytes());
    payload
}

/// A fresh marker nonce: 32 hex characters.
pub fn new_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What [`PhaseMarker::feed`] found in a chunk of stdout.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// No marker yet; these bytes are build output.
    Build(Vec<u8>),
    /// The build ended with `status`; `build` is its last output, `program` the program's first.
    /// `detail` is what the marker line carried after its status (an end marker's run report).
    Ended {
        build: Vec<u8>,
        status: i64,
        detail: String,
        program: Vec<u8>,
    },
}

/// Finds `<nonce>:<status>[ <detail>]\n` in a stdout stream split into arbitrary chunks. Holds
/// back at most the length of a marker, so memory stays bounded whatever the build prints.
#[derive(Debug)]
pub struct PhaseMarker {
    nonce: Vec<u8>,
    held: Vec<u8>,
    max_tail: usize,
}

/// Longest `:<status>\n` tail accepted after a build marker's nonce.
const MAX_STATUS_LEN: usize = 8;
/// Longest tail accepted after an end marker's nonce: `:<status> <quayside-run report>\n`.
const MAX_REPORT_LEN: usize = 512;

impl PhaseMarker {
    /// A build marker: `<nonce>:<status>\n`.
    pub fn new(nonce: &str) -> Self {
        Self {
            nonce: nonce.as_bytes().to_vec(),
            held: Vec::new(),
            max_tail: MAX_STATUS_LEN,
        }
    }

    /// An end marker, whose status may be followed by the run's report:
    /// `<nonce>:<status> <report>\n` ([`end_marker`]).
    pub fn with_detail(nonce: &str) -> Self {
        Self {
            max_tail: MAX_REPORT_LEN,
            ..Self::new(nonce)
        }
    }

    /// The bytes held back because they may start a marker (a tail that is a prefix of it):
    /// once the stream has ended, they are output like any other.
    pub fn take_held(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Scans the next chunk. After [`Scan::Ended`] the marker is spent: feed it nothing more.
    pub fn feed(&mut self, chunk: &[u8]) -> Scan {
        self.held.extend_from_slice(chunk);
        let n = self.nonce.len();
        let found = self
            .held
            .windows(n)
            .position(|w| w == self.nonce.as_slice());
        let Some(at) = found else {
            // Only a tail that could start the marker waits for more: a prompt shows at once.
            let keep = (1..n)
                .rev()
                .find(|&k| self.held.ends_with(&self.nonce[..k]))
                .unwrap_or(0);
            let build = self.held.drain(..self.held.len() - keep).collect();
            return Scan::Build(build);
        };
        let tail = &self.held[at + n..];
        match tail.iter().position(|&b| b == b'\n') {
            Some(nl) if nl <= self.max_tail => {
                // A malformed status (only a forged marker has one) counts as a failed build.
                let line = std::str::from_utf8(&tail[..nl]).ok();
                let (status, detail) = line
                    .and_then(|t| t.strip_prefix(':'))
                    .map(|t| t.split_once(' ').unwrap_or((t, "")))
                    .unwrap_or(("", ""));
                let detail = detail.to_owned();
                let status = status.parse().unwrap_or(255);
                let program = tail[nl + 1..].to_vec();
                self.held.truncate(at);
                Scan::Ended {
                    build: std::mem::take(&mut self.held),
                    status,
                    detail,
                    program,
                }
            }
            _ if tail.len() > self.max_tail => {
                let program = tail.to_vec();
                self.held.truncate(at);
                Scan::Ended {
                    build: std::mem::take(&mut self.held),
                    status: 255,
                    detail: String::new(),
                    program,
                }
            }
            _ => Scan::Build(self.held.drain(..at).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang() -> LanguageConfig {
        LanguageConfig {
            image: "img".into(),
            source_extension: "c".into(),
            entry_file: "main.c".into(),
            build_command: "cc {options} -o main {sources}".into(),
            run_command: r#"./main "$@""#.into(),
            compile_only_command: "cc {options} -c {sources}".into(),
            limits: Default::default(),
        }
    }

    #[test]
    fn expansion_is_one_pass_and_quoted() {
        let vars = [
            ("options", shell_quote("{sources}")),
            ("sources", shell_quote("it's.c")),
        ];
        assert_eq!(
            expand("cc {options} {sources} ${HOME} {x}", &vars),
            r"cc '{sources}' 'it'\''s.c' ${HOME} {x}"
        );
        assert_eq!(expand("{options", &vars), "{options");
    }

    #[test]
    fn script_quotes_job_input_and_passes_args_as_parameters() {
        let files = BTreeMap::from([
            ("main.c".to_owned(), String::new()),
            ("lib/a b.c".to_owned(), String::new()),
            ("lib/a.h".to_owned(), String::new()),
        ]);
        let opts = vec!["-DX=$(id)".to_owned()];
        let run = wrapper_body(&lang(), JobKind::Run, &opts, &files, None)
            .map(|b| stdin_wrapper(&b))
            .expect("runnable");
        assert!(
            run.contains("cc '-DX=$(id)' -o main 'lib/a b.c' 'main.c'"),
            "{run}"
        );
        assert!(run.contains(r#"./main "$@""#), "{run}");
        let check = wrapper_body(&lang(), JobKind::Compile, &[], &files, None)
            .map(|b| stdin_wrapper(&b))
            .expect("checkable");
        assert!(
            check.contains("cc  -c 'lib/a b.c' 'main.c'") && !check.contains("./main"),
            "{check}"
        );

        let single = BTreeMap::from([("hello.c".to_owned(), String::new())]);
        let mut by_entry = lang();
        by_entry.run_command = "run {entry}".into();
        let run = wrapper_body(&by_entry, JobKind::Run, &[], &single, None)
            .map(|b| stdin_wrapper(&b))
            .expect("runnable");
        assert!(
            run.contains("run 'hello.c'"),
            "a lone file is the entry: {run}"
        );
        let run = wrapper_body(&by_entry, JobKind::Run, &[], &files, None)
            .map(|b| stdin_wrapper(&b))
            .expect("runnable");
        assert!(run.contains("run 'main.c'"), "{run}");

        let mut empty = lang();
        empty.run_command.clear();
        assert_eq!(
            wrapper_body(&empty, JobKind::Run, &[], &files, None).map(|b| stdin_wrapper(&b)),
            None
        );
        empty.compile_only_command.clear();
        assert_eq!(
            wrapper_body(&empty, JobKind::Compile, &[], &files, None).map(|b| stdin_wrapper(&b)),
            None
        );
    }

    #[test]
    fn the_sandbox_command_hands_the_script_and_args_to_the_prelude() {
        for shell in [
            WrapperShell::Undumpable,
            WrapperShell::UndumpableIfSupported,
        ] {
            let command = sandbox_command("echo hi".to_owned(), shell);
            assert_eq!(&command[..2], ["sh", "-c"]);
            assert_eq!(&command[3..], ["quayside", "echo hi"]);
            let prelude = &command[2];
            assert!(prelude.starts_with("w=/work/.quayside-sh\n"), "{prelude}");
            assert!(prelude.contains("umask 0666; cp /bin/sh"), "{prelude}");
            assert!(
                prelude.contains("exec \"$w\" -c \"rm -f $w\n$s\" \"$0\" \"$@\""),
                "{prelude}"
            );
            assert!(
                prelude.ends_with("umask 022\neval \"$s\"\n"),
                "falls back to running in place: {prelude}"
            );
            assert_eq!(
                prelude.contains("\"$w\" -c : "),
                shell == WrapperShell::UndumpableIfSupported,
                "only a runtime not known in advance pays for the probe: {prelude}"
            );
        }
        assert_eq!(
            sandbox_command("echo hi".to_owned(), WrapperShell::Plain),
            ["sh", "-c", "echo hi", "quayside"]
        );
        let script = "x".repeat(100_000);
        assert_eq!(
            longest_argument(&script, WrapperShell::Undumpable),
            "rm -f /work/.quayside-sh\n".len() + script.len(),
            "the re-executed shell gets the script behind the removal"
        );
    }

    /// The stub and its header, run by a real shell: the script sees the args as its
    /// parameters and the rest of stdin untouched, as a cold wrapper would.
    #[test]
    fn the_stub_runs_the_script_its_header_carries_with_the_args_and_the_rest_of_stdin() {
        use std::io::Write as _;
        let command = stub_command(WrapperShell::Plain);
        let args = vec!["a b".to_owned(), "it's".to_owned(), String::new()];
        let script = "printf '%s|' \"$#\" \"$@\"; cat\n";
        let mut input = stub_header(&args, script);
        input.extend_from_slice(b"rest of stdin\n");
        let mut child = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write");
        let out = child.wait_with_output().expect("sh ran");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "3|a b|it's||rest of stdin\n"
        );
        let no_header = std::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::null())
            .status()
            .expect("sh");
        assert_eq!(
            i64::from(no_header.code().unwrap_or(-1)),
            EXIT_NO_HEADER,
            "no header is the cold wrapper's missing header: {no_header:?}"
        );
    }

    #[test]
    fn marker_is_found_across_chunk_boundaries() {
        let nonce = "0123456789abcdef0123456789abcdef";
        let stream = format!("warning: x\n{nonce}:0\nhello\n");
        for split in 0..stream.len() {
            let (a, b) = stream.as_bytes().split_at(split);
            let mut m = PhaseMarker::new(nonce);
            let mut build = Vec::new();
            let mut ended: Option<(i64, Vec<u8>)> = None;
            for chunk in [a, b] {
                if let Some((_, program)) = ended.as_mut() {
                    // Spent: what follows is the program's.
                    program.extend_from_slice(chunk);
                    continue;
                }
                match m.feed(chunk) {
                    Scan::Build(bytes) => build.extend(bytes),
                    Scan::Ended {
                        build: last,
                        status,
                        program,
                        ..
                    } => {
                        build.extend(last);
                        ended = Some((status, program));
                    }
                }
            }
            assert_eq!(build, b"warning: x\n", "split at {split}");
            assert_eq!(ended, Some((0, b"hello\n".to_vec())), "split at {split}");
        }
    }

    #[test]
    fn marker_holds_back_only_what_may_start_it_and_reads_failures() {
        let nonce = "0123456789abcdef0123456789abcdef";
        let mut m = PhaseMarker::new(nonce);
        let Scan::Build(out) = m.feed(&[b'x'; 100_000]) else {
            panic!("no marker yet")
        };
        assert_eq!(out.len(), 100_000, "no tail can start the marker");
        assert_eq!(
            m.feed(b"Name? "),
            Scan::Build(b"Name? ".to_vec()),
            "a prompt shows"
        );
        assert_eq!(
            m.feed(b"x01"),
            Scan::Build(b"x".to_vec()),
            "`01` may start it"
        );
        assert_eq!(
            m.feed(format!("{nonce}:1\n").as_bytes()),
            Scan::Ended {
                build: b"01".to_vec(),
                status: 1,
                detail: String::new(),
                program: vec![]
            }
        );
        let mut held = PhaseMarker::new(nonce);
        assert_eq!(held.feed(b"a\n012"), Scan::Build(b"a\n".to_vec()));
        assert_eq!(held.take_held(), b"012", "output once the stream ends");
        let mut forged = PhaseMarker::new(nonce);
        assert!(matches!(
            forged.feed(format!("{nonce}:oops\n").as_bytes()),
            Scan::Ended { status: 255, .. }
        ));
    }

    #[test]
    fn archive_holds_files_and_their_folders() {
        let files = BTreeMap::from([("src/util/u.c".to_owned(), "int u;".to_owned())]);
        let bytes = archive(&files, 10001, 10001).expect("archive");
        let mut names = Vec::new();
        for entry in tar::Archive::new(bytes.as_slice())
            .entries()
            .expect("entries")
        {
            let entry = entry.expect("entry");
            assert_eq!(entry.header().uid().expect("uid"), 10001);
            names.push(entry.path().expect("path").display().to_string());
        }
        assert_eq!(names, ["src", "src/util", "src/util/u.c"]);
    }
}
