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
    pub reset: String,
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
    serde_json::from_slice(&out.stdout).map_err(|e| format!("nix-instantiate output: {e}"))
}
