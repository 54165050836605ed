//! Command-line parsing (SPEC §2). This module only turns arguments into a [`Command`];
//! `main.rs` dispatches it and maps a [`clap::Error`] to exit status 2 (clap's own
//! `--help` / `--version` exit 0).

pub mod check;
pub mod demo;
pub mod demo_login;
pub mod init;
mod inspect;
pub mod keygen;
pub mod revoke;
pub mod run;
pub mod token;
pub mod user;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, CommandFactory as _, Parser, Subcommand};

use crate::config::units::DurationStr;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `serve -c FILE` or `serve --demo` (exactly one of the two).
    Serve {
        /// The config file, unless `demo`.
        config: Option<PathBuf>,
        /// Zero-config demo mode.
        demo: bool,
        /// `--listen ADDR` (demo only; default 127.0.0.1:8080).
        listen: Option<SocketAddr>,
    },
    /// `init DIR`: write a starting configuration and keys.
    Init {
        /// The directory to write into (created when missing).
        dir: PathBuf,
    },
    /// `revoke -c FILE ...`: post a revocation to the admin listener.
    Revoke {
        /// The config naming the admin listener.
        config: PathBuf,
        /// What to revoke.
        target: RevokeTarget,
        /// How to authenticate.
        auth: AdminAuth,
    },
    /// `check -c FILE`.
    Check {
        /// The config file to validate.
        config: PathBuf,
    },
    /// `keygen --alg ALG --out PREFIX`.
    Keygen {
        /// `EdDSA`, `HS256`, `HS384` or `HS512`.
        alg: String,
        /// Output prefix: `PREFIX.key.pem` + `PREFIX.pub.pem`, or `PREFIX.secret`.
        out: PathBuf,
    },
    /// `token mint ...`: print a signed JWT.
    TokenMint {
        /// The signing key file (`.key.pem` or `.secret`).
        key: PathBuf,
        /// Header `kid`.
        kid: Option<String>,
        /// `sub` claim.
        sub: String,
        /// Lifetime: `exp = now + ttl`.
        ttl: Duration,
        /// `scope` claim (space-separated).
        scope: Option<String>,
        /// `aud` claim.
        aud: Option<String>,
        /// `iss` claim.
        iss: Option<String>,
        /// `jti` claim.
        jti: Option<String>,
        /// Extra claims, `(name, raw JSON text)`, in order; the JSON is not checked here.
        claims: Vec<(String, String)>,
        /// `--alg` for an HMAC secret (an extension to SPEC §2).
        alg: Option<String>,
    },
    /// `user add NAME [--scope S] -c FILE`: add a user of the token service.
    UserAdd {
        /// The config naming `[login]`.
        config: PathBuf,
        /// The user name.
        name: String,
        /// Space-separated scopes (default none).
        scope: String,
    },
    /// `user remove NAME -c FILE`: remove a user and revoke its tokens.
    UserRemove {
        /// The config naming `[login]`.
        config: PathBuf,
        /// The user name.
        name: String,
    },
    /// `user list -c FILE`.
    UserList {
        /// The config naming `[login]`.
        config: PathBuf,
    },
    /// `token inspect [-c FILE] TOKEN`.
    TokenInspect {
        /// Config whose keys and claim rules judge the token.
        config: Option<PathBuf>,
        /// The compact JWS.
        token: String,
    },
}

/// What `revoke` revokes (SPEC §6's two body forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// `--jti J [--exp N]`.
    Jti {
        /// The token id.
        jti: String,
        /// Its `exp`, so the entry can be dropped after it.
        exp: Option<u64>,
    },
    /// `--sub S [--before N]`.
    Sub {
        /// The subject.
        sub: String,
        /// Tokens issued before this (unix seconds; the gateway's default is now).
        before: Option<u64>,
    },
}

/// How `revoke` authenticates to the admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAuth {
    /// Mint a 60-second admin token from this signing key.
    Key {
        /// `PREFIX.key.pem` or `PREFIX.secret`.
        key: PathBuf,
        /// Header `kid`.
        kid: Option<String>,
    },
    /// A ready admin token (`--token` or `WSGATE_ADMIN_TOKEN`).
    Token(String),
    /// Neither was given; `WSGATE_ADMIN_TOKEN` is read at run time.
    Env,
}

/// Parses `args` (program name first, as in `std::env::args_os()`).
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, clap::Error> {
    let cli = Cli::try_parse_from(args)?;
    Ok(match cli.command {
        TopCommand::Serve(serve) => Command::Serve {
            config: serve.config,
            demo: serve.demo,
            listen: serve.listen,
        },
        TopCommand::Init { dir } => Command::Init { dir },
        TopCommand::Revoke(r) if r.kid.is_some() && r.key.is_none() => {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "revoke: --kid names the key of --key FILE; give --key too",
            ));
        }
        TopCommand::Revoke(r) => Command::Revoke {
            config: r.config,
            target: match (r.jti, r.sub) {
                (Some(jti), None) => RevokeTarget::Jti { jti, exp: r.exp },
                (None, Some(sub)) => RevokeTarget::Sub {
                    sub,
                    before: r.before,
                },
                // clap's groups make exactly one of the two present.
                _ => unreachable!("revoke: --jti and --sub are one required group"),
            },
            auth: match (r.key, r.token) {
                (Some(key), None) => AdminAuth::Key { key, kid: r.kid },
                (None, Some(token)) => AdminAuth::Token(token),
                _ => AdminAuth::Env,
            },
        },
        TopCommand::Check { config } => Command::Check { config },
        TopCommand::Keygen { alg, out } => Command::Keygen { alg, out },
        TopCommand::Token {
            command: TokenCommand::Mint(mint),
        } => Command::TokenMint {
            key: mint.key,
            kid: mint.kid,
            sub: mint.sub,
            ttl: mint.ttl,
            scope: mint.scope,
            aud: mint.aud,
            iss: mint.iss,
            jti: mint.jti,
            claims: mint.claims,
            alg: mint.alg,
        },
        TopCommand::Token {
            command: TokenCommand::Inspect { config, token },
        } => Command::TokenInspect { config, token },
        TopCommand::User {
            command:
                UserCommand::Add {
                    config,
                    name,
                    scope,
                },
        } => Command::UserAdd {
            config,
            name,
            scope: scope.unwrap_or_default(),
        },
        TopCommand::User {
            command: UserCommand::Remove { config, name },
        } => Command::UserRemove { config, name },
        TopCommand::User {
            command: UserCommand::List { config },
        } => Command::UserList { config },
    })
}

/// wsgate: a WebSocket security gateway that checks a signed token before every upgrade.
#[derive(Debug, Parser)]
#[command(
    name = "wsgate",
    version,
    after_help = "First steps:\n  wsgate serve --demo      a gateway with a browser page, a token and a client command\n  wsgate init DIR          an annotated config, keys, and the next three commands"
)]
struct Cli {
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    /// Run the gateway (foreground; logs to stderr); try `serve --demo` first
    Serve(ServeArgs),
    /// Write DIR/wsgate.toml (every key, annotated), keys under DIR/keys/; never overwrites
    Init {
        /// The directory (created when missing)
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Revoke tokens by jti or subject through the admin listener of a running gateway
    Revoke(RevokeArgs),
    /// Validate a config file; every problem is reported with its key path
    Check {
        /// The config file
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Write key files: PREFIX.key.pem and PREFIX.pub.pem (EdDSA) or PREFIX.secret (HS*)
    Keygen {
        /// Key algorithm
        #[arg(long, value_parser = ["EdDSA", "ES256", "RS256", "HS256", "HS384", "HS512"])]
        alg: String,
        /// Output file prefix
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Mint or inspect tokens
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage the users of the token service ([login])
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; the password comes from a prompt, or one line on stdin
    Add {
        /// The user name (ASCII letters, digits and . _ @ + -)
        #[arg(value_name = "NAME")]
        name: String,
        /// Space-separated scopes put in the user's tokens, e.g. "chat echo"
        #[arg(long, value_name = "SCOPES")]
        scope: Option<String>,
        /// The config file naming [login]
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Remove a user and revoke its tokens (through the admin listener)
    Remove {
        /// The user name
        #[arg(value_name = "NAME")]
        name: String,
        /// The config file naming [login]
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List the users and their scopes
    List {
        /// The config file naming [login]
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group(ArgGroup::new("mode").required(true).args(["config", "demo"])))]
struct ServeArgs {
    /// The config file
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Zero-config demo: an in-memory Ed25519 key, /echo, a browser page at /
    #[arg(long)]
    demo: bool,
    /// Demo address (default 127.0.0.1:8080; port 0 picks a free one)
    #[arg(long, value_name = "ADDR", conflicts_with = "config")]
    listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group(ArgGroup::new("what").required(true).args(["jti", "sub"])))]
#[command(group(ArgGroup::new("auth").args(["key", "token"])))]
struct RevokeArgs {
    /// The config file naming the admin listener
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Revoke the token with this id
    #[arg(long, value_name = "J")]
    jti: Option<String>,
    /// With --jti: the token's exp (unix seconds), so the entry is dropped after it
    #[arg(long, value_name = "N", conflicts_with = "sub")]
    exp: Option<u64>,
    /// Revoke every token of this subject issued before --before
    #[arg(long, value_name = "S")]
    sub: Option<String>,
    /// With --sub: unix seconds (default: now, as the gateway's clock says)
    #[arg(long, value_name = "N", conflicts_with = "jti")]
    before: Option<u64>,
    /// Mint a 60-second admin token with this signing key (one the gateway accepts)
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// With --key: the key id for the admin token's header
    #[arg(long, value_name = "K", conflicts_with = "token")]
    kid: Option<String>,
    /// A ready admin token (default: $WSGATE_ADMIN_TOKEN)
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a signed JWT
    Mint(MintArgs),
    /// Decode a token and say whether the configured keys and claim rules accept it
    Inspect {
        /// The config file whose keys and rules judge the token
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The token (a JWT may start with '-', so it is taken as is)
        #[arg(value_name = "TOKEN", allow_hyphen_values = true)]
        token: String,
    },
}

#[derive(Debug, Args)]
struct MintArgs {
    /// Signing key: PREFIX.key.pem (EdDSA) or PREFIX.secret (HS*)
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Key id for the token header
    #[arg(long, value_name = "K")]
    kid: Option<String>,
    /// Subject (`sub`)
    #[arg(long, value_name = "S")]
    sub: String,
    /// Lifetime, e.g. 15m (units: ms, s, m, h, d)
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    ttl: Duration,
    /// Space-separated scopes, e.g. "chat echo"
    #[arg(long, value_name = "SCOPES")]
    scope: Option<String>,
    /// Audience (`aud`)
    #[arg(long, value_name = "A")]
    aud: Option<String>,
    /// Issuer (`iss`)
    #[arg(long, value_name = "I")]
    iss: Option<String>,
    /// Token id (`jti`), for revocation
    #[arg(long, value_name = "J")]
    jti: Option<String>,
    /// Extra claim as NAME=JSON, e.g. --claim 'role="admin"'; repeatable
    #[arg(long = "claim", value_name = "NAME=JSON", value_parser = parse_claim)]
    claims: Vec<(String, String)>,
    /// Algorithm for a .secret key (default: from the file name, else the secret's length)
    #[arg(long, value_name = "HS256|HS384|HS512")]
    alg: Option<String>,
}

/// `--ttl`: the config's duration syntax.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    text.parse::<DurationStr>()
        .map(|duration| duration.0)
        .map_err(|error| error.to_string())
}

/// `--claim NAME=JSON`: split at the first `=`; the JSON is checked when the token is built.
fn parse_claim(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, json)) if !name.is_empty() => Ok((name.to_owned(), json.to_owned())),
        _ => Err(format!(
            "expected NAME=JSON, e.g. --claim 'role=\"admin\"', got {text:?}"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        parse_args(
            std::iter::once("wsgate")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    fn kind(args: &[&str]) -> ErrorKind {
        parse(args).unwrap_err().kind()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve() {
        assert_eq!(
            parse(&["serve", "-c", "wsgate.toml"]).unwrap(),
            Command::Serve {
                config: Some("wsgate.toml".into()),
                demo: false,
                listen: None
            }
        );
        assert_eq!(
            parse(&["serve", "--config", "a.toml"]).unwrap(),
            Command::Serve {
                config: Some("a.toml".into()),
                demo: false,
                listen: None
            }
        );
        assert_eq!(
            parse(&["serve", "--config=a.toml"]).unwrap(),
            Command::Serve {
                config: Some("a.toml".into()),
                demo: false,
                listen: None
            }
        );
        assert_eq!(
            parse(&["serve", "--demo"]).unwrap(),
            Command::Serve {
                config: None,
                demo: true,
                listen: None
            }
        );
        assert_eq!(
            parse(&["serve", "--demo", "--listen", "127.0.0.1:0"]).unwrap(),
            Command::Serve {
                config: None,
                demo: true,
                listen: Some("127.0.0.1:0".parse().unwrap())
            }
        );
        assert_eq!(
            kind(&["serve", "-c", "a.toml", "--listen", "127.0.0.1:0"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["serve", "--listen", "127.0.0.1:0"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["serve", "--demo", "--listen", "localhost"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["serve"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["serve", "--demo", "-c", "a.toml"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(kind(&["serve", "-c"]), ErrorKind::InvalidValue);
        assert_eq!(
            kind(&["serve", "--demo", "--verbose"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind(&["serve", "--demo", "extra"]),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn check() {
        assert_eq!(
            parse(&["check", "-c", "w.toml"]).unwrap(),
            Command::Check {
                config: "w.toml".into()
            }
        );
        assert_eq!(
            parse(&["check", "--config", "w.toml"]).unwrap(),
            Command::Check {
                config: "w.toml".into()
            }
        );
        assert_eq!(kind(&["check"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["check", "w.toml"]), ErrorKind::UnknownArgument);
        assert_eq!(
            kind(&["check", "-c", "a", "-c", "b"]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn keygen() {
        for alg in ["EdDSA", "ES256", "RS256", "HS256", "HS384", "HS512"] {
            assert_eq!(
                parse(&["keygen", "--alg", alg, "--out", "keys/k"]).unwrap(),
                Command::Keygen {
                    alg: alg.into(),
                    out: "keys/k".into()
                }
            );
        }
        assert_eq!(
            kind(&["keygen", "--alg", "PS256", "--out", "k"]),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            kind(&["keygen", "--alg", "eddsa", "--out", "k"]),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            kind(&["keygen", "--alg", "EdDSA"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["keygen", "--out", "k"]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn token_mint_with_every_flag() {
        let command = parse(&[
            "token",
            "mint",
            "--key",
            "k.key.pem",
            "--kid",
            "ed-1",
            "--sub",
            "alice",
            "--ttl",
            "15m",
            "--scope",
            "chat echo",
            "--aud",
            "wsgate",
            "--iss",
            "https://id",
            "--jti",
            "j-1",
            "--claim",
            "role=\"admin\"",
            "--claim",
            "n=1",
            "--claim",
            "eq=a=b",
        ])
        .unwrap();
        assert_eq!(
            command,
            Command::TokenMint {
                key: "k.key.pem".into(),
                kid: Some("ed-1".into()),
                sub: "alice".into(),
                ttl: Duration::from_secs(900),
                scope: Some("chat echo".into()),
                aud: Some("wsgate".into()),
                iss: Some("https://id".into()),
                jti: Some("j-1".into()),
                claims: vec![
                    ("role".into(), "\"admin\"".into()),
                    ("n".into(), "1".into()),
                    ("eq".into(), "a=b".into()),
                ],
                alg: None,
            }
        );
    }

    #[test]
    fn token_mint_minimal_and_bad() {
        assert_eq!(
            parse(&["token", "mint", "--key", "k", "--sub", "s", "--ttl", "500ms"]).unwrap(),
            Command::TokenMint {
                key: "k".into(),
                kid: None,
                sub: "s".into(),
                ttl: Duration::from_millis(500),
                scope: None,
                aud: None,
                iss: None,
                jti: None,
                claims: Vec::new(),
                alg: None,
            }
        );
        assert_eq!(
            kind(&["token", "mint", "--sub", "s", "--ttl", "1m"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["token", "mint", "--key", "k", "--ttl", "1m"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["token", "mint", "--key", "k", "--sub", "s"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["token", "mint", "--key", "k", "--sub", "s", "--ttl", "15"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&[
                "token", "mint", "--key", "k", "--sub", "s", "--ttl", "1m", "--claim", "noequals"
            ]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["token", "mint", "--key", "k", "--sub", "s", "--ttl", "1m", "--claim", "=1"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["token", "mint", "--key", "k", "--sub", "s", "--ttl", "1m", "--exp", "5"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind(&["token", "mint", "--key", "k", "--sub", "s", "--sub", "t", "--ttl", "1m"]),
            ErrorKind::ArgumentConflict
        );
        let message = parse(&["token", "mint", "--key", "k", "--sub", "s", "--ttl", "15 m"])
            .unwrap_err()
            .to_string();
        assert!(
            message
                .contains(r#"expected a duration like "30s" (units: ms, s, m, h, d), got "15 m""#),
            "{message}"
        );
        assert!(message.contains("--ttl"), "{message}");
    }

    #[test]
    fn token_inspect() {
        assert_eq!(
            parse(&["token", "inspect", "eyJ.a.b"]).unwrap(),
            Command::TokenInspect {
                config: None,
                token: "eyJ.a.b".into()
            }
        );
        assert_eq!(
            parse(&["token", "inspect", "-c", "w.toml", "eyJ.a.b"]).unwrap(),
            Command::TokenInspect {
                config: Some("w.toml".into()),
                token: "eyJ.a.b".into()
            }
        );
        // base64url may start with '-'.
        assert_eq!(
            parse(&["token", "inspect", "-c", "w.toml", "-x.y.z"]).unwrap(),
            Command::TokenInspect {
                config: Some("w.toml".into()),
                token: "-x.y.z".into()
            }
        );
        assert_eq!(
            kind(&["token", "inspect"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["token", "inspect", "a", "b"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind(&["token"]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(kind(&["token", "revoke"]), ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn init_and_revoke() {
        assert_eq!(
            parse(&["init", "gw"]).unwrap(),
            Command::Init { dir: "gw".into() }
        );
        assert_eq!(kind(&["init"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            parse(&[
                "revoke", "-c", "w.toml", "--jti", "j", "--exp", "9", "--key", "k", "--kid", "main"
            ])
            .unwrap(),
            Command::Revoke {
                config: "w.toml".into(),
                target: RevokeTarget::Jti {
                    jti: "j".into(),
                    exp: Some(9)
                },
                auth: AdminAuth::Key {
                    key: "k".into(),
                    kid: Some("main".into())
                },
            }
        );
        assert_eq!(
            parse(&["revoke", "-c", "w.toml", "--sub", "s", "--before", "5", "--token", "-t.x.y"])
                .unwrap(),
            Command::Revoke {
                config: "w.toml".into(),
                target: RevokeTarget::Sub {
                    sub: "s".into(),
                    before: Some(5)
                },
                auth: AdminAuth::Token("-t.x.y".into()),
            }
        );
        assert_eq!(
            parse(&["revoke", "-c", "w.toml", "--sub", "s"]).unwrap(),
            Command::Revoke {
                config: "w.toml".into(),
                target: RevokeTarget::Sub {
                    sub: "s".into(),
                    before: None
                },
                auth: AdminAuth::Env,
            }
        );
        for bad in [
            &["revoke", "-c", "w.toml"][..],
            &["revoke", "-c", "w.toml", "--jti", "j", "--sub", "s"],
            &["revoke", "-c", "w.toml", "--jti", "j", "--before", "1"],
            &["revoke", "-c", "w.toml", "--sub", "s", "--exp", "1"],
            &[
                "revoke", "-c", "w.toml", "--sub", "s", "--key", "k", "--token", "t",
            ],
            &["revoke", "-c", "w.toml", "--sub", "s", "--kid", "main"],
            &["revoke", "--sub", "s"],
            &["revoke", "-c", "w.toml", "--jti", "j", "--exp", "soon"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn user_commands() {
        assert_eq!(
            parse(&[
                "user",
                "add",
                "alice",
                "--scope",
                "chat echo",
                "-c",
                "w.toml"
            ])
            .unwrap(),
            Command::UserAdd {
                config: "w.toml".into(),
                name: "alice".into(),
                scope: "chat echo".into()
            }
        );
        assert_eq!(
            parse(&["user", "add", "-c", "w.toml", "bob"]).unwrap(),
            Command::UserAdd {
                config: "w.toml".into(),
                name: "bob".into(),
                scope: String::new()
            }
        );
        assert_eq!(
            parse(&["user", "remove", "bob", "-c", "w.toml"]).unwrap(),
            Command::UserRemove {
                config: "w.toml".into(),
                name: "bob".into()
            }
        );
        assert_eq!(
            parse(&["user", "list", "-c", "w.toml"]).unwrap(),
            Command::UserList {
                config: "w.toml".into()
            }
        );
        assert_eq!(
            kind(&["user", "add", "alice"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["user", "add", "-c", "w.toml"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["user", "list", "-c", "w.toml", "x"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(kind(&["user", "rename"]), ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn top_level() {
        assert_eq!(
            kind(&[]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(kind(&["launch"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["--help"]), ErrorKind::DisplayHelp);
        assert_eq!(kind(&["--version"]), ErrorKind::DisplayVersion);
        assert_eq!(kind(&["serve", "--help"]), ErrorKind::DisplayHelp);
        assert_eq!(kind(&["help"]), ErrorKind::DisplayHelp);
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("wsgate serve --demo"), "{help}");
        assert!(help.contains("wsgate init DIR"), "{help}");
        let help = parse(&["token", "mint", "--help"]).unwrap_err().to_string();
        for flag in [
            "--key", "--kid", "--sub", "--ttl", "--scope", "--aud", "--iss", "--jti", "--claim",
        ] {
            assert!(help.contains(flag), "{flag} missing from {help}");
        }
    }
}
