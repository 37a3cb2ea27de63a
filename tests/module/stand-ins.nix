# What a NixOS evaluation passes to modules besides the options, as stand-ins: packages
# are a name and a store path, nothing built (a module evaluation only interpolates their
# paths), and `utils` has what the modules use of NixOS's.
lib:
let
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
    # What the tests look at of a command: its environment and script.
    runCommand = name: env: script: package name // { inherit env script; };
    tzdata = package "tzdata";
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
in
{
  inherit package pkgs;
  utils = {
    inherit escapeSystemdPath;
    # NixOS's list (nixos/lib/utils.nix): mounted in the initrd whatever they say.
    pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
  };
}
