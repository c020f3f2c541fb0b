//! `--config FILE` and `--print-config` for `server` and `client`.
//!
//! The file is TOML with one key per long flag, named like it (`--max-requests-per-id`
//! is `max-requests-per-id`; repeatable flags take arrays: `hostname = ["a", "b"]`).
//! The defaults live in one place, the clap definitions in [`crate::cli`]: clap parses
//! the command line first, then every setting that was not given there (nor through
//! its environment variable, see [`clap::parser::ValueSource`]) takes the file's value
//! when the file has one. A repeatable flag given on the command line replaces the
//! file's whole list. Relative paths in the file, and default file names when a file is
//! used, are resolved against the file's directory; paths on the command line stay
//! relative to the working directory.
//!
//! Requirements that involve several settings (`--cert` needs `--key`, `--hostname`
//! needs `--self-signed`, a client needs `--server` and `--id`) are checked after the
//! merge, so one half may come from the file and the other from the command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args as _, Command as ClapCommand};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cli::{ClientArgs, Command, LogFormat, ServerArgs, WireArg};
use crate::error::CliError;

/// How a setting's value is written in the file.
trait Value: Sized {
    /// The type the file holds.
    type File;
    /// The value from the file; relative paths are resolved against `base`.
    fn from_file(v: Self::File, base: &Path) -> Self;
    /// The value to print, `None` when unset.
    fn to_file(&self) -> Option<Self::File>;
    /// A default left in place when a config file is used: a relative path is made
    /// relative to the file's directory like the file's own paths (`cert-out`'s
    /// h2rev2-server.crt lands next to the file). Other values stay as they are.
    fn rebase(&mut self, _base: &Path) {}
}

/// Values that the file holds as they are.
macro_rules! as_is {
    ($($t:ty),* $(,)?) => {$(
        impl Value for $t {
            type File = $t;
            fn from_file(v: $t, _: &Path) -> $t {
                v
            }
            fn to_file(&self) -> Option<$t> {
                Some(self.clone())
            }
        }
    )*};
}
as_is!(
    String, bool, u64, u32, u8, usize, SocketAddr, LogFormat, WireArg
);

/// A repeatable flag in the file: an array, or one string for a single value
/// (`server = "https://a"` as well as `server = ["https://a", "https://b"]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

impl Value for Vec<String> {
    type File = OneOrMany;
    fn from_file(v: OneOrMany, _: &Path) -> Vec<String> {
        v.into_vec()
    }
    fn to_file(&self) -> Option<OneOrMany> {
        Some(OneOrMany::Many(self.clone()))
    }
}

impl Value for PathBuf {
    type File = PathBuf;
    fn from_file(v: PathBuf, base: &Path) -> PathBuf {
        // `join` keeps an absolute `v` as it is.
        base.join(v)
    }
    fn to_file(&self) -> Option<PathBuf> {
        Some(self.clone())
    }
    fn rebase(&mut self, base: &Path) {
        *self = base.join(&*self);
    }
}

impl<T: Value> Value for Option<T> {
    type File = T::File;
    fn from_file(v: T::File, base: &Path) -> Option<T> {
        Some(T::from_file(v, base))
    }
    fn to_file(&self) -> Option<T::File> {
        self.as_ref().and_then(T::to_file)
    }
    fn rebase(&mut self, base: &Path) {
        if let Some(v) = self {
            v.rebase(base);
        }
    }
}

/// The directory relative paths in `file` are relative to, made absolute so that
/// `--print-config` shows paths that hold from anywhere.
fn base_dir(file: Option<&Path>) -> PathBuf {
    let dir = file.and_then(Path::parent).unwrap_or(Path::new(""));
    if dir.is_absolute() {
        return dir.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(dir),
        // Still right for this process, which does not change its directory.
        Err(_) => dir.to_path_buf(),
    }
}

/// Where a setting that is not a default came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// The command line or the flag's environment variable.
    Flag,
    /// The config file at this path.
    File(PathBuf),
}

/// The settings that were given (not defaults), by key.
#[derive(Debug, Default)]
struct Given(BTreeMap<String, Origin>);

impl Given {
    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// How to name `key` to the user: `--key`, or `` `key` in FILE ``.
    fn name(&self, key: &str) -> String {
        match self.0.get(key) {
            Some(Origin::File(p)) => format!("`{key}` in {}", p.display()),
            _ => format!("--{key}"),
        }
    }
}

/// Defines a file struct (every setting optional, unknown keys refused) and the merge
/// into, and the printing from, the clap struct `$args`. Each line is
/// `key: TYPE => path.in.args;` where TYPE is the type of that field of `$args` and
/// `key` is the long flag's name with `_` for `-`.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        $name:ident for $args:ty {
            $( $(#[$fmeta:meta])* $key:ident : $ty:ty => $($path:ident).+ ; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize, Serialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                $key: Option<<$ty as Value>::File>,
            )*
        }

        impl $name {
            /// The keys of the file, in order.
            #[cfg(test)]
            const KEYS: &[&str] = &[$(stringify!($key)),*];

            /// Fills every setting of `args` that `explicit` says was not given with
            /// the file's value, if any, and rebases the defaults left (see
            /// [`Value::rebase`]); records what was given where.
            fn merge(
                self,
                args: &mut $args,
                explicit: &dyn Fn(&str) -> bool,
                file: Option<&Path>,
                given: &mut Given,
            ) {
                let base = base_dir(file);
                $(
                    let key = stringify!($key).replace('_', "-");
                    if explicit(&key) {
                        given.0.insert(key, Origin::Flag);
                    } else if let Some(file) = file {
                        match self.$key {
                            Some(v) => {
                                args.$($path).+ = <$ty as Value>::from_file(v, &base);
                                given.0.insert(key, Origin::File(file.to_path_buf()));
                            }
                            None => args.$($path).+.rebase(&base),
                        }
                    }
                )*
            }

            /// The settings of `args`, as a file would hold them.
            fn effective(args: &$args) -> Self {
                $name {
                    $( $key: <$ty as Value>::to_file(&args.$($path).+), )*
                }
            }
        }
    };
}

settings! {
    /// The settings of a server's config file: every flag of `h2rev2 server`
    /// but `--config` and `--print-config`.
    ServerFile for ServerArgs {
        listen: String => listen;
        cert: Option<PathBuf> => cert;
        key: Option<PathBuf> => key;
        self_signed: bool => self_signed;
        cert_out: PathBuf => cert_out;
        self_signed_key: Option<PathBuf> => self_signed_key;
        hostname: Vec<String> => hostnames;
        tokens: Option<PathBuf> => tokens;
        tokens_env: Option<String> => tokens_env;
        caller_tokens: Option<PathBuf> => caller_tokens;
        caller_users: Option<PathBuf> => caller_users;
        caller_certs: Option<PathBuf> => caller_certs;
        client_ca: Option<PathBuf> => client_ca;
        allow_anonymous: bool => allow_anonymous;
        listener_certs: bool => listener_certs;
        anonymous_id: Vec<String> => anonymous_ids;
        default_id: Option<String> => default_id;
        domain: Option<String> => domain;
        tcp: Vec<String> => tcp;
        admin: Option<SocketAddr> => admin.admin;
        metrics: Option<SocketAddr> => admin.metrics;
        admin_token_file: Option<PathBuf> => admin.admin_token_file;
        cluster_redis: Option<String> => cluster.cluster_redis;
        cluster_advertise: Option<String> => cluster.cluster_advertise;
        cluster_replica: Option<String> => cluster.cluster_replica;
        cluster_token_file: Option<PathBuf> => cluster.cluster_token_file;
        cluster_ca: Option<PathBuf> => cluster.cluster_ca;
        cluster_lease: u64 => cluster.cluster_lease;
        base_path: String => routes.base_path;
        dialer_path: String => routes.dialer_path;
        dialer_key: String => routes.dialer_key;
        dial_timeout: u64 => dial_timeout;
        grace: u64 => grace;
        drain_delay: Option<u64> => drain_delay;
        max_sessions: usize => limits.max_sessions;
        max_sessions_per_id: usize => limits.max_sessions_per_id;
        max_pending_dials: usize => limits.max_pending_dials;
        max_spares: usize => limits.max_spares;
        max_conns_per_ip: usize => limits.max_conns_per_ip;
        handshake_timeout: u64 => limits.handshake_timeout;
        idle_timeout: u64 => limits.idle_timeout;
        keepalive: u64 => limits.keepalive;
        keepalive_timeout: u64 => limits.keepalive_timeout;
        response_timeout: u64 => limits.response_timeout;
        body_idle_timeout: u64 => limits.body_idle_timeout;
        max_requests_per_id: usize => limits.max_requests_per_id;
        queue_timeout: u64 => limits.queue_timeout;
        max_requests_per_client: usize => limits.max_requests_per_client;
        tunnel_stream_budget: u32 => limits.tunnel_stream_budget;
        log_format: LogFormat => log.log_format;
    }
}

settings! {
    /// The settings of a client's config file: every flag of `h2rev2 client` but
    /// `--config` and `--print-config`.
    ClientFile for ClientArgs {
        server: Vec<String> => server;
        id: Option<String> => id;
        token: Option<String> => token;
        ca: Option<PathBuf> => ca;
        cert: Option<PathBuf> => cert;
        key: Option<PathBuf> => key;
        insecure: bool => insecure;
        proxy_host: Option<String> => proxy_host;
        tcp_target: Option<String> => tcp_target;
        strip_prefix: Option<String> => strip_prefix;
        preserve_host: bool => preserve_host;
        base_path: String => routes.base_path;
        dialer_path: String => routes.dialer_path;
        dialer_key: String => routes.dialer_key;
        proxy: Option<String> => proxy;
        spares: usize => spares;
        wire: WireArg => wire;
        max_attempts: Option<u32> => max_attempts;
        max_backoff: u64 => max_backoff;
        connections: u8 => connections;
        log_format: LogFormat => log.log_format;
    }
}

/// What to do once the command line and the config file are merged.
// Built once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Prepared {
    /// Run this command.
    Run(Command),
    /// `--print-config`: print this text and exit 0.
    Print(String),
}

/// Merges the config file of `server` or `client` (if `--config` is given) into the
/// command, checks the settings that depend on each other, and handles
/// `--print-config`. `matches` are the top-level matches `command` was made from.
pub fn prepare(command: Command, matches: &ArgMatches) -> Result<Prepared, CliError> {
    let sub = |name: &str| {
        matches
            .subcommand_matches(name)
            .expect("the matches of the parsed subcommand")
    };
    match command {
        Command::Server(mut args) => {
            let m = sub("server");
            let cmd = ServerArgs::augment_args(ClapCommand::new("server"));
            let file: ServerFile = load(args.file.config.as_deref())?;
            let mut given = Given::default();
            let path = args.file.config.clone();
            file.merge(&mut args, &explicit(&cmd, m), path.as_deref(), &mut given);
            check_server(&args, &given)?;
            if args.file.print_config {
                let mut eff = ServerFile::effective(&args);
                eff.tokens_env = eff.tokens_env.map(|_| MASK.to_string());
                return Ok(Prepared::Print(render("server", &eff)));
            }
            Ok(Prepared::Run(Command::Server(args)))
        }
        Command::Client(mut args) => {
            let m = sub("client");
            let cmd = ClientArgs::augment_args(ClapCommand::new("client"));
            let file: ClientFile = load(args.file.config.as_deref())?;
            let mut given = Given::default();
            let path = args.file.config.clone();
            file.merge(&mut args, &explicit(&cmd, m), path.as_deref(), &mut given);
            check_client(&args, &given)?;
            if args.file.print_config {
                let mut eff = ClientFile::effective(&args);
                eff.token = eff.token.map(|_| MASK.to_string());
                eff.server = eff.server.map(|s| {
                    OneOrMany::Many(s.into_vec().iter().map(|u| mask_url_password(u)).collect())
                });
                eff.proxy_host = eff.proxy_host.map(|u| mask_url_password(&u));
                eff.proxy = eff.proxy.map(|u| mask_url_password(&u));
                return Ok(Prepared::Print(render("client", &eff)));
            }
            Ok(Prepared::Run(Command::Client(args)))
        }
        other => Ok(Prepared::Run(other)),
    }
}

/// What secrets are printed as.
const MASK: &str = "***";

/// Whether the setting with long flag `long` was given on the command line or through
/// its environment variable (rather than left at its default).
fn explicit<'a>(cmd: &'a ClapCommand, m: &'a ArgMatches) -> impl Fn(&str) -> bool + 'a {
    move |long| {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .unwrap_or_else(|| panic!("config key {long} has no flag --{long}"));
        matches!(
            m.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    }
}

/// Reads and parses the config file at `path`; no file: every setting unset.
fn load<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, CliError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::config(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "config file {}: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })
}

/// The `--print-config` text.
fn render(sub: &str, settings: &impl Serialize) -> String {
    let body = toml::to_string(settings).expect("settings are plain TOML values");
    format!(
        "# h2rev2 {sub}: effective configuration (command line and environment over the \
         config file over defaults).\n# Secrets are shown as \"{MASK}\".\n{body}"
    )
}

/// `https://user:pass@host/` with the password replaced by the mask (also without a
/// scheme: `user:pass@host:port`, as `--proxy` takes it).
fn mask_url_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let scheme = if scheme.is_empty() && !url.contains("://") {
        String::new()
    } else {
        format!("{scheme}://")
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:{MASK}@{host}{tail}"),
        None => url.to_string(),
    }
}

/// The requirements between `server` settings that clap cannot check before the merge.
fn check_server(args: &ServerArgs, given: &Given) -> Result<(), CliError> {
    let n = |k: &str| given.name(k);
    if args.self_signed {
        for k in ["cert", "key"] {
            if given.has(k) {
                return Err(CliError::usage(format!(
                    "{} and {} exclude each other: use your certificate (--cert and --key) \
                     or a self-signed one",
                    n(k),
                    n("self-signed")
                )));
            }
        }
    } else {
        match (&args.cert, &args.key) {
            (Some(_), Some(_)) => {}
            (None, None) => {
                return Err(CliError::usage(
                    "the server needs a certificate: --cert FILE and --key FILE, or \
                     --self-signed (in a config file: `cert` and `key`, or \
                     `self-signed = true`)",
                ));
            }
            (Some(_), None) => {
                return Err(CliError::usage(format!(
                    "{} needs --key FILE, its private key",
                    n("cert")
                )));
            }
            (None, Some(_)) => {
                return Err(CliError::usage(format!(
                    "{} needs --cert FILE, the certificate of the key",
                    n("key")
                )));
            }
        }
        for k in ["cert-out", "self-signed-key", "hostname"] {
            if given.has(k) {
                return Err(CliError::usage(format!(
                    "{} is for --self-signed, which is not given",
                    n(k)
                )));
            }
        }
    }
    if !args.allow_anonymous && !args.anonymous_ids.is_empty() {
        return Err(CliError::usage(format!(
            "{} needs --allow-anonymous",
            n("anonymous-id")
        )));
    }
    Ok(())
}

/// The requirements between `client` settings that clap cannot check before the merge.
fn check_client(args: &ClientArgs, given: &Given) -> Result<(), CliError> {
    if args.server.is_empty() {
        return Err(CliError::usage(
            "give the public server: --server https://HOST:PORT (or `server` in the \
             config file)",
        ));
    }
    if args.id.is_none() {
        return Err(CliError::usage(
            "give the id to register: --id ID (or `id` in the config file)",
        ));
    }
    match (&args.cert, &args.key) {
        (Some(_), None) => {
            return Err(CliError::usage(format!(
                "{} needs --key FILE, its private key",
                given.name("cert")
            )));
        }
        (None, Some(_)) => {
            return Err(CliError::usage(format!(
                "{} needs --cert FILE, the client certificate of the key",
                given.name("key")
            )));
        }
        _ => {}
    }
    if args.insecure && args.ca.is_some() {
        return Err(CliError::usage(format!(
            "{} and {} exclude each other: --ca checks the server's certificate, \
             --insecure does not check it at all",
            given.name("ca"),
            given.name("insecure")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::{CommandFactory, FromArgMatches};

    use crate::cli::Cli;

    /// The long flags of a subcommand that a file must hold.
    fn flags(cmd: &ClapCommand) -> Vec<String> {
        let mut v: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| !["config", "print-config", "help"].contains(l))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    fn keys(k: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = k.iter().map(|k| k.replace('_', "-")).collect();
        v.sort();
        v
    }

    #[test]
    fn the_file_holds_every_flag() {
        let server = ServerArgs::augment_args(ClapCommand::new("server"));
        assert_eq!(keys(ServerFile::KEYS), flags(&server));
        let client = ClientArgs::augment_args(ClapCommand::new("client"));
        assert_eq!(keys(ClientFile::KEYS), flags(&client));
    }

    fn parse(argv: &[&str]) -> Result<Prepared, CliError> {
        let m = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        prepare(cli.command, &m)
    }

    fn server_args(argv: &[&str]) -> ServerArgs {
        match parse(argv) {
            Ok(Prepared::Run(Command::Server(a))) => a,
            Ok(_) => panic!("not a server run"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn file_fills_what_flags_leave_unset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nself-signed = true\ncert-out = \"out/s.crt\"\n\
             hostname = [\"a.example\"]\nmax-sessions = 7\nqueue-timeout = 50\n\
             tokens = \"/abs/tokens\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let a = server_args(&["h2rev2", "server", "--config", f, "--max-sessions", "9"]);
        assert_eq!(a.listen, "127.0.0.1:1");
        assert!(a.self_signed);
        assert_eq!(a.cert_out, dir.path().join("out/s.crt"));
        assert_eq!(a.tokens.as_deref(), Some(Path::new("/abs/tokens")));
        assert_eq!(a.hostnames, ["a.example"]);
        assert_eq!(a.limits.max_sessions, 9, "the flag wins");
        assert_eq!(a.limits.queue_timeout, 50);
        // Untouched settings keep clap's defaults.
        assert_eq!(a.limits.max_spares, 64);
        assert_eq!(a.routes.dialer_path, "/revdial");
        // A flag given as its default value still wins over the file.
        let a = server_args(&["h2rev2", "server", "--config", f, "--queue-timeout", "2000"]);
        assert_eq!(a.limits.queue_timeout, 2000);
        // A repeatable flag replaces the file's list.
        let a = server_args(&["h2rev2", "server", "--config", f, "--hostname", "b"]);
        assert_eq!(a.hostnames, ["b"]);
    }

    #[test]
    fn requirements_are_checked_after_the_merge() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "self-signed = true\n").unwrap();
        let f = file.to_str().unwrap();
        // One half in the file, the other on the command line.
        let a = server_args(&["h2rev2", "server", "--config", f, "--hostname", "x"]);
        assert_eq!(a.hostnames, ["x"]);
        // With a file, a default file name is in the file's directory too; without
        // one, in the working directory.
        assert_eq!(a.cert_out, dir.path().join("h2rev2-server.crt"));
        let a = server_args(&["h2rev2", "server", "--self-signed"]);
        assert_eq!(a.cert_out, Path::new("h2rev2-server.crt"));
        let err = |argv: &[&str]| match parse(argv) {
            Err(e) => e,
            Ok(_) => panic!("{argv:?} was accepted"),
        };
        let e = err(&["h2rev2", "server"]);
        assert!(e.message.contains("--self-signed"), "{e}");
        let e = err(&["h2rev2", "server", "--cert", "c"]);
        assert!(e.message.contains("--key"), "{e}");
        let e = err(&[
            "h2rev2", "server", "--config", f, "--cert", "c", "--key", "k",
        ]);
        assert!(
            e.message.contains("in ") && e.message.contains("--cert"),
            "{e}"
        );
        let e = err(&[
            "h2rev2",
            "server",
            "--cert",
            "c",
            "--key",
            "k",
            "--hostname",
            "x",
        ]);
        assert!(e.message.contains("--hostname"), "{e}");
        let e = err(&["h2rev2", "server", "--self-signed", "--anonymous-id", "a"]);
        assert!(e.message.contains("--allow-anonymous"), "{e}");
        let e = err(&[
            "h2rev2",
            "client",
            "--id",
            "a",
            "--proxy-host",
            "http://x:1",
        ]);
        assert!(e.message.contains("--server"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.toml");
        std::fs::write(&file, "self-signed = true\n\nmax-sesions = 3\n").unwrap();
        let f = file.to_str().unwrap();
        let Err(e) = parse(&["h2rev2", "server", "--config", f]) else {
            panic!("accepted");
        };
        assert_eq!(e.code, crate::error::Code::Usage);
        assert!(e.message.contains(f), "{e}");
        assert!(e.message.contains("max-sesions"), "{e}");
        assert!(e.message.contains("line 3"), "{e}");
        std::fs::write(&file, "self-signed = true\nmax-sessions = \"many\"\n").unwrap();
        let Err(e) = parse(&["h2rev2", "server", "--config", f]) else {
            panic!("accepted");
        };
        assert!(e.message.contains("line 2"), "{e}");
        let Err(e) = parse(&["h2rev2", "server", "--config", "/nonexistent/h2rev2.toml"]) else {
            panic!("accepted");
        };
        assert_eq!(e.code, crate::error::Code::Config);
    }

    #[test]
    fn print_config_masks_secrets_and_reloads() {
        let Ok(Prepared::Print(text)) = parse(&[
            "h2rev2",
            "client",
            "--server",
            "https://u:pw@public.example:9090",
            "--id",
            "web",
            "--token",
            "t0p-s3cret",
            "--tcp-target",
            "127.0.0.1:22",
            "--proxy",
            "http://proxyuser:pr0xy-pw@10.0.0.1:3128",
            "--print-config",
        ]) else {
            panic!("no text");
        };
        assert!(
            !text.contains("t0p-s3cret") && !text.contains("pw@") && !text.contains("pr0xy-pw"),
            "{text}"
        );
        assert!(
            text.contains("proxy = \"http://proxyuser:***@10.0.0.1:3128\""),
            "{text}"
        );
        assert!(text.contains("token = \"***\""), "{text}");
        assert!(text.contains("https://u:***@public.example:9090"), "{text}");
        // The printed configuration is itself a valid config file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, &text).unwrap();
        let f = file.to_str().unwrap();
        let Ok(Prepared::Print(again)) =
            parse(&["h2rev2", "client", "--config", f, "--print-config"])
        else {
            panic!("no text");
        };
        assert_eq!(again, text);
    }

    #[test]
    fn url_passwords() {
        assert_eq!(
            mask_url_password("http://a:b@h:1/p@x"),
            "http://a:***@h:1/p@x"
        );
        assert_eq!(mask_url_password("http://a@h/"), "http://a@h/");
        assert_eq!(mask_url_password("https://h:1"), "https://h:1");
        assert_eq!(mask_url_password("u:pw@h:1"), "u:***@h:1");
        assert_eq!(
            mask_url_password("socks5h://u:p%40w@h:1"),
            "socks5h://u:***@h:1"
        );
    }
}
