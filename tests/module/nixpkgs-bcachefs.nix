# A stand-in for the part of nixpkgs' bcachefs module (nixos/modules/tasks/filesystems/
# bcachefs.nix) that imperm's module meets: for a bcachefs root it puts the bcachefs tool
# into the systemd initrd from boot.bcachefs.package. nixpkgs itself cannot be had on the
# test machines; this is the one behaviour of it the tests need, and it is written here,
# not copied.
{ config, lib, pkgs, ... }:
let
  wanted =
    fss: if builtins.isList fss then builtins.elem "bcachefs" fss else fss.bcachefs or false;
  inInitrd = wanted config.boot.initrd.supportedFilesystems || wanted config.boot.supportedFilesystems;
in
{
  options.boot.bcachefs.package = lib.mkOption {
    type = lib.types.package;
    default = pkgs.bcachefs-tools;
  };
  config = lib.mkIf inInitrd {
    boot.initrd.systemd.extraBin.bcachefs = "${config.boot.bcachefs.package}/bin/bcachefs";
  };
}
