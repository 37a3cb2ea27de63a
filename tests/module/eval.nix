# Evaluates imperm's NixOS module for one host inside a configuration made of the real
# nixpkgs `lib` (nix-community/nixpkgs.lib), the real nix-community/impermanence module,
# imperm's module and the NixOS option declarations of ./nixos-options.nix, and returns
# what the tests look at. `tests/module/run` calls it; see there for where the two
# repositories come from (they are never part of this repository).
#
# The packages are stand-ins (a name and a store path, nothing built): a module
# evaluation only interpolates their paths.
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

  package =
    name:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
      drvPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha1" name)}-${name}.drv";
    };

  pkgs = {
    callPackage =
      f: args:
      let
        fn = if builtins.isFunction f then f else import f;
      in
      fn (builtins.intersectAttrs (builtins.functionArgs fn) { inherit lib pkgs; } // args);
    runCommand = name: _env: _script: package name;
    writeShellScript = name: _text: package name;
    writeText = name: _text: package name;
    bash = package "bash";
    util-linux = package "util-linux";
    coreutils = package "coreutils";
    bcachefs-tools = package "bcachefs-tools";
    stdenv.hostPlatform.system = "x86_64-linux";
  };

  # systemd-escape --path, as NixOS's utils.escapeSystemdPath computes it.
  escapeSystemdPath =
    s:
    let
      trimmed = lib.removeSuffix "/" (lib.removePrefix "/" s);
      escaped = lib.strings.escapeC (lib.stringToCharacters " !\"#$%&'()*+,;<=>=@[\\]^`{|}~-") trimmed;
      dot = if lib.hasPrefix "." escaped then "\\x2e" + lib.removePrefix "." escaped else escaped;
    in
    if s == "/" then "-" else builtins.replaceStrings [ "/" ] [ "-" ] dot;

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
    specialArgs = {
      inherit pkgs;
      utils = { inherit escapeSystemdPath; };
    };
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
  baseline = unit (services.imperm-baseline or null);
  gc = unit (services.imperm-gc or null);
  gcTimer = config.systemd.timers.imperm-gc.timerConfig or null;
  # Forced as a system build forces them: a clash of definitions is an error here too.
  fileSystems = builtins.mapAttrs (_: f: {
    inherit (f) device fsType options neededForBoot;
  }) config.fileSystems;
  # What imperm reads of environment.persistence: per storage, the paths.
  persistence = builtins.mapAttrs (_: p: {
    directories = map (d: d.dirPath) p.directories;
    files = map (f: f.filePath) p.files;
  }) config.environment.persistence;
}
