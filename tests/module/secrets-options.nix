# Stand-ins for the options of sops-nix (Mic92/sops-nix) and agenix (ryantm/agenix) that
# imperm's module reads, declared with their types. Their real modules cannot be evaluated
# here (they build their own programs from nixpkgs, which this machine cannot have), so a
# test that needs them imports this file; everything else about them is left out.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  paths = mkOption {
    type = types.listOf types.path;
    default = [ ];
  };
in
{
  options.sops = {
    secrets = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.neededForUsers = mkOption {
            type = types.bool;
            default = false;
          };
        }
      );
      default = { };
    };
    age.sshKeyPaths = paths;
    gnupg.sshKeyPaths = paths;
  };
  options.age.identityPaths = paths;
}
