# A stand-in for home-manager's `home-manager.users`, which impermanence's NixOS module reads
# (home.persistence of each user, as impermanence's own home-manager module gives it:
# entries with their dirPath/filePath and storage). home-manager itself cannot be had here;
# a test sets the entries in that shape.
{ lib, ... }:
{
  options.home-manager.users = lib.mkOption {
    type = lib.types.attrsOf lib.types.anything;
    default = { };
  };
}
