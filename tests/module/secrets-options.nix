# Stand-ins for the options of sops-nix (Mic92/sops-nix) and agenix (ryantm/agenix) that
# imperm's module reads, declared with their types and the defaults they have on a host
# with OpenSSH (both take the host keys). Their real modules cannot be evaluated here
# (they build their own programs from nixpkgs, which this machine cannot have), so a test
# that needs them imports this file; everything else about them is left out.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  paths =
    default:
    mkOption {
      type = types.listOf types.path;
      inherit default;
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
    # sops-nix: the ed25519 host keys for age, the RSA ones for gnupg.
    age.sshKeyPaths = paths [ "/etc/ssh/ssh_host_ed25519_key" ];
    age.keyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
    };
    gnupg.sshKeyPaths = paths [ "/etc/ssh/ssh_host_rsa_key" ];
  };
  options.age = {
    secrets = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    identityPaths = paths [ "/etc/ssh/ssh_host_ed25519_key" "/etc/ssh/ssh_host_rsa_key" ];
  };
}
