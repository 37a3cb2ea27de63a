# Evaluates what `imperm … --format nix` prints (an attribute to paste into a host's
# configuration) inside a configuration made of the real nixpkgs `lib`, the NixOS option
# declarations of ./nixos-options.nix and either the real nix-community/impermanence
# (`--style impermanence`) or the real nix-community/preservation (`--style preservation`),
# and returns what that module makes of it. tests/module.rs compares it with the same
# command's JSON.
{
  nixpkgsLib,
  # Exactly one of the two.
  impermanence ? null,
  preservation ? null,
  # A .nix file holding the snippet as a module: `{ ... }: { <snippet> }`.
  snippet,
  # users.users for the snippet's `users.<name>` blocks.
  users ? [ ],
}:
let
  lib = import (nixpkgsLib + "/lib");
  inherit (import ./stand-ins.nix lib) pkgs utils;
  evaluated = lib.evalModules {
    modules = [
      ./nixos-options.nix
      snippet
      {
        boot.initrd.systemd.enable = true;
        users.users = lib.genAttrs users (_: { isNormalUser = true; group = "users"; });
        fileSystems."/persist".neededForBoot = true;
      }
    ]
    ++ lib.optional (impermanence != null) (impermanence + "/nixos.nix")
    ++ lib.optionals (preservation != null) [
      (preservation + "/module.nix")
      { preservation.enable = true; }
    ];
    specialArgs = { inherit pkgs utils; };
  };
  config = evaluated.config;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
in
if impermanence != null then
  {
    inherit failedAssertions;
    # Every entry, users' joined to their homes, with what impermanence creates it as.
    entries = lib.concatMap (
      p:
      lib.concatMap (
        q:
        map (d: { path = d.dirPath; inherit (d) mode user group; initrd = false; parent = null; }) q.directories
        # impermanence makes no file, only the file's directory: its owner and mode.
        ++ map (f: { path = f.filePath; inherit (f.parentDirectory) mode user group; initrd = false; parent = null; }) q.files
      ) ([ p ] ++ builtins.attrValues p.users)
    ) (builtins.attrValues config.environment.persistence);
  }
else
  let
    tmpfiles = config.systemd.tmpfiles.settings.preservation or { };
    initrdTmpfiles = config.boot.initrd.systemd.tmpfiles.settings.preservation or { };
    # What preservation creates in the storage for a path: its tmpfiles rule there.
    rule = rules: key: (rules.${key} or { }).d or (rules.${key} or { }).f or null;
    entry =
      initrd: m:
      let
        path = if initrd then lib.removePrefix "/sysroot" m.where else m.where;
        rules = if initrd then initrdTmpfiles else tmpfiles;
        prefix = if initrd then "/sysroot/persist" else "/persist";
        r = rule rules "${prefix}${path}";
        # A file's directory, when preservation is told to make it (configureParent).
        isFile = (rules."${prefix}${path}" or { }) ? f;
        p = if isFile then (rules."${prefix}${dirOf path}" or { }).d or null else null;
      in
      {
        inherit path initrd;
        mode = if r == null then null else r.mode;
        user = if r == null then null else r.user;
        group = if r == null then null else r.group;
        parent = if p == null then null else { inherit (p) mode user group; };
      };
  in
  {
    inherit failedAssertions;
    entries = map (entry false) config.systemd.mounts ++ map (entry true) config.boot.initrd.systemd.mounts;
  }
