# Evaluates imperm's NixOS module for one host inside a configuration made of the real
# nixpkgs `lib` (nix-community/nixpkgs.lib), the real nix-community/impermanence module,
# imperm's module and the NixOS option declarations of ./nixos-options.nix, and returns
# what the tests look at. `tests/module/run` calls it; see there for where the two
# repositories come from (they are never part of this repository).
#
# The packages are stand-ins (./stand-ins.nix).
{
  nixpkgsLib,
  impermanence,
  host,
  # Extra module(s) the caller sets on top of the host, for one-item cases.
  extra ? { },
  # A function of environment.persistence, as `nix eval --apply` would run it (the
  # README's recipe), whose result is returned as `applied`.
  apply ? null,
}:
let
  lib = import (nixpkgsLib + "/lib");

  inherit (import ./stand-ins.nix lib) package pkgs utils;

  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      ./nixpkgs-bcachefs.nix
      (impermanence + "/nixos.nix")
      ../../nix/module.nix
      host
      extra
      { services.imperm.package = package "imperm"; }
    ];
    specialArgs = { inherit pkgs utils; };
  };
  config = evaluated.config;
  unit =
    u:
    if u == null then
      null
    else
      {
        inherit (u)
          description
          wantedBy
          requiredBy
          requires
          after
          before
          conflicts
          unitConfig
          ;
        serviceConfig = u.serviceConfig or { };
        path = map toString (u.path or [ ]);
      };
  services = config.systemd.services;
in
{
  applied = if apply == null then null else apply config.environment.persistence;
  # The reset's command line as nix/lib.nix writes it for this host (what tests/vm boots).
  resetCommand = (import ../../nix/lib.nix).resetCommand "${config.services.imperm.package}" config.services.imperm.filesystem;
  resetArgv = (import ../../nix/lib.nix).resetArgv config.services.imperm.filesystem;
  # The package's source, as nix/package.nix filters it: which of these paths it keeps.
  sourceKeeps =
    let
      drv = import ../../nix/package.nix {
        inherit lib;
        rustPlatform.buildRustPackage = args: args;
        installShellFiles = package "installShellFiles";
      };
      root = toString ../..;
    in
    builtins.listToAttrs (
      map (p: {
        name = p;
        value = drv.src.filter "${root}/${p}" "directory";
      }) [ "target" "src" "bench" "tests/fixtures" "nix" ".git" ]
    );
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  inherit (config) warnings;
  configToml = config.environment.etc."imperm/config.toml".text or null;
  reset = unit (config.boot.initrd.systemd.services.imperm-reset or null);
  initrdExtraBin = config.boot.initrd.systemd.extraBin;
  initrdSecrets = config.boot.initrd.secrets;
  checks = map (c: { inherit (c) name env script; }) config.system.checks;
  baseline = unit (services.imperm-baseline or null);
  gc = unit (services.imperm-gc or null);
  gcTimer = config.systemd.timers.imperm-gc.timerConfig or null;
  # Forced as a system build forces them: a clash of definitions is an error here too.
  fileSystems = builtins.mapAttrs (_: f: {
    inherit (f) device fsType options neededForBoot;
  }) config.fileSystems;
  # What imperm reads of environment.persistence: per storage, the paths.
  # What impermanence really mounts: its directory mount units (stage 2 and initrd) and
  # its files, each with the storage it comes from.
  mounted =
    map (m: { path = m.where; what = m.what; }) config.systemd.mounts
    ++ map (m: { path = lib.removePrefix "/sysroot" m.where; what = lib.removePrefix "/sysroot" m.what; }) config.boot.initrd.systemd.mounts
    ++ lib.concatMap (
      p:
      lib.optionals p.enable (
        map (f: { path = f.filePath; what = f.persistentStoragePath + f.filePath; }) (
          p.files ++ lib.concatMap (u: u.files) (builtins.attrValues p.users)
        )
      )
    ) (builtins.attrValues config.environment.persistence);
  persistence = builtins.mapAttrs (_: p: {
    directories = map (d: d.dirPath) (p.directories ++ lib.concatMap (u: u.directories) (builtins.attrValues p.users));
    files = map (f: f.filePath) (p.files ++ lib.concatMap (u: u.files) (builtins.attrValues p.users));
  }) config.environment.persistence;
}
