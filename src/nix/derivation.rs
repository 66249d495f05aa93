//! Reading a derivation file (`.drv`, Nix's ATerm format) for its outputs and input
//! derivations, without a Nix command whose name changes between Nix versions
//! (`show-derivation` became `derivation show`).
//!
//! `Derive([outputs],[(drvPath,[outputNames])...],[inputSrcs],system,builder,[args],[env])`

use super::{StorePath, StorePathError};

/// Why a derivation could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DrvParseError {
    #[error("malformed derivation at byte {0}")]
    Syntax(usize),
    #[error("input derivation: {0}")]
    InputPath(#[from] StorePathError),
}

enum Term {
    Str(String),
    List(Vec<Term>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn expect(&mut self, c: u8) -> Result<(), DrvParseError> {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(DrvParseError::Syntax(self.i))
        }
    }

    /// A string, a list `[..]` or a tuple `(..)` (tuples read as lists).
    fn term(&mut self) -> Result<Term, DrvParseError> {
        match self.s.get(self.i) {
            Some(b'"') => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.i) {
                        Some(b'"') => break,
                        Some(b'\\') => {
                            let c = *self.s.get(self.i + 1).ok_or(DrvParseError::Syntax(self.i))?;
                            out.push(match c {
                                b'n' => b'\n',
                                b't' => b'\t',
                                b'r' => b'\r',
                                other => other,
                            });
                            self.i += 2;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.i += 1;
                        }
                        None => return Err(DrvParseError::Syntax(self.i)),
                    }
                }
                self.i += 1;
                Ok(Term::Str(String::from_utf8_lossy(&out).into_owned()))
            }
            Some(&open @ (b'[' | b'(')) => {
                let close = if open == b'[' { b']' } else { b')' };
                self.i += 1;
                let mut items = Vec::new();
                if self.s.get(self.i) == Some(&close) {
                    self.i += 1;
                    return Ok(Term::List(items));
                }
                loop {
                    items.push(self.term()?);
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(&c) if c == close => {
                            self.i += 1;
                            return Ok(Term::List(items));
                        }
                        _ => return Err(DrvParseError::Syntax(self.i)),
                    }
                }
            }
            _ => Err(DrvParseError::Syntax(self.i)),
        }
    }
}

/// The fields of a derivation file's text.
fn fields(drv: &str) -> Result<Vec<Term>, DrvParseError> {
    let mut p = Parser { s: drv.as_bytes(), i: 0 };
    for &c in b"Derive" {
        p.expect(c)?;
    }
    let Term::List(fields) = p.term()? else { return Err(DrvParseError::Syntax(0)) };
    Ok(fields)
}

/// The input derivations of a derivation file's text: (drv path, output names).
pub fn input_derivations(drv: &str) -> Result<Vec<(StorePath, Vec<String>)>, DrvParseError> {
    let fields = fields(drv)?;
    let Some(Term::List(inputs)) = fields.get(1) else { return Err(DrvParseError::Syntax(drv.len())) };
    inputs
        .iter()
        .map(|input| match input {
            Term::List(pair) => match (pair.first(), pair.get(1)) {
                (Some(Term::Str(path)), Some(Term::List(outs))) => {
                    let outs = outs
                        .iter()
                        .filter_map(|o| match o {
                            Term::Str(s) => Some(s.clone()),
                            Term::List(_) => None,
                        })
                        .collect();
                    Ok((StorePath::parse(path)?, outs))
                }
                _ => Err(DrvParseError::Syntax(drv.len())),
            },
            Term::Str(_) => Err(DrvParseError::Syntax(drv.len())),
        })
        .collect()
}

/// The output paths of a derivation file's text (floating content-addressed outputs, whose
/// paths are not known before the build, are left out).
pub fn output_paths(drv: &str) -> Result<Vec<StorePath>, DrvParseError> {
    let fields = fields(drv)?;
    let Some(Term::List(outputs)) = fields.first() else { return Err(DrvParseError::Syntax(drv.len())) };
    let mut paths = Vec::new();
    for output in outputs {
        match output {
            Term::List(parts) => match parts.get(1) {
                Some(Term::Str(path)) if path.is_empty() => {}
                Some(Term::Str(path)) => paths.push(StorePath::parse(path)?),
                _ => return Err(DrvParseError::Syntax(drv.len())),
            },
            Term::Str(_) => return Err(DrvParseError::Syntax(drv.len())),
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRV: &str = r#"Derive([("out","/nix/store/3m4spq9rszwr1nd2h1610dkzj58kc3s2-hello-lib","","")],[("/nix/store/fjaipyaqjdk09bqfskr9ahbm70n6m082-greeting-1.0.drv",["out"]),("/nix/store/vnpqqkk4kkw2xrwcww7di1gc4vf9wsrd-busybox-1.35.0.drv",["bin","out"])],[],"x86_64-linux","/bin/sh",["-euc","printf '#!%s\\n' \"x\" > $out"],[("PATH","/usr/bin:/bin"),("name","hello-lib")])"#;

    #[test]
    fn reads_input_derivations() {
        let inputs = input_derivations(DRV).unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].0.as_str(), "/nix/store/fjaipyaqjdk09bqfskr9ahbm70n6m082-greeting-1.0.drv");
        assert_eq!(inputs[1].1, vec!["bin".to_string(), "out".to_string()]);
    }

    #[test]
    fn reads_output_paths() {
        assert_eq!(
            output_paths(DRV).unwrap(),
            vec![StorePath::parse("/nix/store/3m4spq9rszwr1nd2h1610dkzj58kc3s2-hello-lib").unwrap()]
        );
        let floating = DRV.replace("\"/nix/store/3m4spq9rszwr1nd2h1610dkzj58kc3s2-hello-lib\"", "\"\"");
        assert_eq!(output_paths(&floating).unwrap(), vec![]);
        assert!(output_paths("Derive(").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(input_derivations("Derive(").is_err());
        assert!(input_derivations("{\"json\": true}").is_err());
        assert!(input_derivations(&DRV[..DRV.len() - 1]).is_err());
        let outside = DRV.replace("/nix/store/fjaipyaqjdk09bqfskr9ahbm70n6m082-greeting-1.0.drv", "/tmp/x.drv");
        assert!(matches!(input_derivations(&outside), Err(DrvParseError::InputPath(_))));
    }
}
