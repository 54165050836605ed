//! Command-line parsing (SPEC §2). This module only turns arguments into a [`Command`];
//! `main.rs` dispatches it and maps a [`clap::Error`] to exit status 2 (clap's own
//! `--help` / `--version` exit 0).

pub mod check;
pub mod keygen;
pub mod run;
pub mod token;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// `token inspect [-c FILE] TOKEN`.
    TokenInspect {
        /// Config whose keys and claim rules judge the token.
        config: Option<PathBuf>,
        /// The compact JWS.
        token: String,
    },
}

/// Parses `args` (program name first, as in `std::env::args_os()`).
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, clap::Error> {
    let cli = Cli::try_parse_from(args)?;
    Ok(match cli.command {
        TopCommand::Serve(serve) => Command::Serve {
            config: serve.config,
            demo: serve.demo,
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
    })
}

/// wsgate: a WebSocket security gateway that checks a signed token before every upgrade.
#[derive(Debug, Parser)]
#[command(name = "wsgate", version, disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    /// Run the gateway (foreground; logs to stderr)
    Serve(ServeArgs),
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
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ServeArgs {
    /// The config file
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Zero-config demo: 127.0.0.1:8080, an in-memory Ed25519 key, /echo
    #[arg(long)]
    demo: bool,
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
                demo: false
            }
        );
        assert_eq!(
            parse(&["serve", "--config", "a.toml"]).unwrap(),
            Command::Serve {
                config: Some("a.toml".into()),
                demo: false
            }
        );
        assert_eq!(
            parse(&["serve", "--config=a.toml"]).unwrap(),
            Command::Serve {
                config: Some("a.toml".into()),
                demo: false
            }
        );
        assert_eq!(
            parse(&["serve", "--demo"]).unwrap(),
            Command::Serve {
                config: None,
                demo: true
            }
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
    fn top_level() {
        assert_eq!(
            kind(&[]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(kind(&["launch"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["--help"]), ErrorKind::DisplayHelp);
        assert_eq!(kind(&["--version"]), ErrorKind::DisplayVersion);
        assert_eq!(kind(&["serve", "--help"]), ErrorKind::DisplayHelp);
        let help = parse(&["token", "mint", "--help"]).unwrap_err().to_string();
        for flag in [
            "--key", "--kid", "--sub", "--ttl", "--scope", "--aud", "--iss", "--jti", "--claim",
        ] {
            assert!(help.contains(flag), "{flag} missing from {help}");
        }
    }
}
