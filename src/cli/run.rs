//! Dispatch of a parsed [`Command`]: each arm loads what it needs, runs, and turns
//! failures into one line and an exit code (SPEC §2: 1 bad config or rejected input,
//! 2 usage error).

use std::path::Path;

use super::Command;

use crate::auth::keys::Alg;
use crate::clock;
use crate::config::{self, Config};
use crate::net::server;

/// A failed command: the line to print (may be empty when already printed) and the
/// exit code.
#[derive(Debug)]
pub struct Failure {
    /// One line naming what is wrong.
    pub message: String,
    /// Exit status.
    pub code: u8,
}

impl Failure {
    pub(crate) fn config(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
}

/// Runs one command.
pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve {
            config: Some(path), ..
        } => serve_file(&path),
        Command::Serve {
            demo: true, listen, ..
        } => super::demo::serve_demo(listen),
        Command::Init { dir } => {
            let written = super::init::init(&dir).map_err(Failure::config)?;
            let program = std::env::args()
                .next()
                .filter(|p| p.contains('/'))
                .unwrap_or_else(|| "wsgate".to_owned());
            print!("{}", super::init::next_steps(&program, &written));
            Ok(())
        }
        Command::Revoke {
            config,
            target,
            auth,
        } => {
            let cfg = load(&config)?;
            super::revoke::run(&config, &cfg, &target, auth)
        }
        Command::Serve { .. } => Err(Failure::usage("serve: give -c FILE or --demo")),
        Command::Check { config } => match super::check::run_check(&config) {
            0 => Ok(()),
            code => Err(Failure {
                message: String::new(),
                code: u8::try_from(code).unwrap_or(1),
            }),
        },
        Command::Keygen { alg, out } => {
            let alg = Alg::from_config_name(&alg).ok_or_else(|| {
                Failure::usage(format!(
                    "--alg: unknown algorithm {alg:?} (EdDSA, HS256, HS384, HS512)"
                ))
            })?;
            let files = super::keygen::keygen(alg, &out).map_err(Failure::config)?;
            for f in files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        Command::TokenMint {
            key,
            kid,
            sub,
            ttl,
            scope,
            aud,
            iss,
            jti,
            claims,
            alg,
        } => {
            let alg = match alg {
                Some(a) => Some(Alg::from_config_name(&a).ok_or_else(|| {
                    Failure::usage(format!(
                        "--alg: unknown algorithm {a:?} (HS256, HS384, HS512)"
                    ))
                })?),
                None => None,
            };
            let mut parsed = Vec::with_capacity(claims.len());
            for (name, json) in claims {
                let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
                    Failure::usage(format!("--claim {name}: value is not JSON: {e}"))
                })?;
                parsed.push((name, value));
            }
            // exp is whole seconds: a shorter lifetime would mint a token that is already
            // expired (exp == iat) and only works inside the leeway.
            if ttl < std::time::Duration::from_secs(1) {
                return Err(Failure::usage("--ttl: must be at least 1s"));
            }
            let opts = super::token::MintOptions {
                key_file: key,
                alg,
                kid,
                sub,
                ttl_secs: ttl.as_secs(),
                scope,
                aud,
                iss,
                jti,
                claims: parsed,
            };
            let token = super::token::mint(&opts, clock::unix_now()).map_err(Failure::config)?;
            println!("{token}");
            Ok(())
        }
        Command::UserAdd {
            config,
            name,
            scope,
        } => {
            let cfg = load(&config)?;
            super::user::add(&config, &cfg, &name, &scope, None)
        }
        Command::UserRemove { config, name } => {
            let cfg = load(&config)?;
            super::user::remove(&config, &cfg, &name)
        }
        Command::UserList { config } => {
            let cfg = load(&config)?;
            super::user::list(&config, &cfg)
        }
        Command::TokenInspect { config, token } => {
            let verifier = match config {
                Some(path) => {
                    let cfg = load(&path)?;
                    let verifier = server::build_verifier(&cfg).map_err(Failure::config)?;
                    // SPEC §9: inspect fetches the providers' sets, and says what it fetched.
                    verifier.map(|v| {
                        let (v, lines) =
                            crate::control::issuers::fetch_for_inspect(v, &cfg.auth.providers);
                        for line in lines {
                            println!("{line}");
                        }
                        v
                    })
                }
                None => None,
            };
            let (report, accepted) =
                super::token::inspect(token.trim(), verifier.as_ref(), clock::unix_now());
            print!("{report}");
            if accepted {
                Ok(())
            } else {
                Err(Failure::config(String::new()))
            }
        }
    }
}

fn load(path: &Path) -> Result<Config, Failure> {
    config::load(path).map_err(|errors| Failure::config(errors.to_string().trim_end().to_string()))
}

fn serve_file(path: &Path) -> Result<(), Failure> {
    let cfg = load(path)?;
    for w in cfg.warnings() {
        crate::warn!("{w}");
    }
    crate::control::serve(&cfg, Some(path)).map_err(Failure::config)
}
