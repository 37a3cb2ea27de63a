//! The module's side of a boot, evaluated from `nix/lib.nix` with nix-instantiate (as
//! tests/nix.rs does): the reset's command line exactly as the module writes it into
//! imperm-reset.service, the device paths the unit waits for, the config.toml it puts in
//! /etc, and the persisted set it gives impermanence.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Host {
    /// imperm-reset.service's ExecStart, as the module writes it.
    pub reset: String,
    #[serde(rename = "resetArgv")]
    reset_argv: Vec<String>,
    pub devices: Vec<String>,
    pub config: String,
    pub persisted: Persisted,
}

#[derive(Debug, Deserialize)]
pub struct Persisted {
    pub directories: Vec<String>,
    pub files: Vec<String>,
}

/// Evaluates each of `hosts` (services.imperm settings, as JSON, written to `input`) at once.
pub fn evaluate(hosts: &[Value], input: &Path) -> Result<Vec<Host>, String> {
    std::fs::write(input, serde_json::to_vec(hosts).unwrap()).map_err(|e| e.to_string())?;
    let expr = format!(
        r#"let imperm = import ./nix/lib.nix; in
        map (host: {{
          reset = imperm.resetCommand "{tools}" host.filesystem;
          resetArgv = imperm.resetArgv host.filesystem;
          devices = imperm.devicePaths host.filesystem.type host.filesystem.device;
          # As the module calls it: the device resolved as the reset gets it.
          config = imperm.hostToml (host // {{ filesystem = host.filesystem // {{ device = imperm.resetDevice host.filesystem; }}; }});
          persisted = imperm.hostPersistence host;
        }}) (builtins.fromJSON (builtins.readFile {input}))"#,
        tools = crate::image::TOOLS,
        input = input.display(),
    );
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|e| format!("nix-instantiate: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nix-instantiate: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let hosts: Vec<Host> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("nix-instantiate output: {e}"))?;
    for host in &hosts {
        let argv = host.argv()?;
        if argv[0] != format!("{}/bin/imperm", crate::image::TOOLS) || argv[1..] != host.reset_argv
        {
            return Err(format!(
                "ExecStart {} is not imperm with {:?}",
                host.reset, host.reset_argv
            ));
        }
    }
    Ok(hosts)
}

impl Host {
    /// The reset's ExecStart split as systemd.service(5) splits it (not a shell): words
    /// apart at spaces, a double-quoted one C-unescaped (lib.nix writes JSON strings, whose
    /// escapes are among C's), then `%%` and `$$` undoubled (specifiers and variables).
    pub fn argv(&self) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut rest = self.reset.trim_start();
        while !rest.is_empty() {
            let (word, after) = if rest.starts_with('"') {
                let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
                let word = stream
                    .next()
                    .ok_or("nothing")?
                    .map_err(|e| format!("ExecStart {}: {e}", self.reset))?;
                (word, &rest[stream.byte_offset()..])
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                (rest[..end].to_string(), &rest[end..])
            };
            words.push(word.replace("%%", "%").replace("$$", "$"));
            rest = after.trim_start();
        }
        Ok(words)
    }
}
