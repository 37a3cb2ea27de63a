# H001, the service host (seed, phase 3): many services and containers, btrfs.
{ ... }:
{
  boot.initrd.systemd.enable = true;
  fileSystems = {
    "/" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "btrfs";
      options = [ "subvol=@root" ];
    };
    "/nix" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "btrfs";
      options = [ "subvol=@nix" "noatime" ];
    };
    "/persist" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "btrfs";
      options = [ "subvol=@persist" ];
      neededForBoot = true;
    };
  };

  services.imperm = {
    enable = true;
    filesystem = {
      type = "btrfs";
      device = "/dev/disk/by-label/nixos";
    };
    directories = [
      "/var/lib/forgejo"
      "/var/lib/zitadel"
      "/var/lib/openbao"
      "/bao-keys"
      "/var/lib/trilium"
      "/var/lib/opengist"
      "/var/lib/open-webui"
      "/var/lib/n8n"
      "/var/lib/nixarr/state"
      # Podman: the volumes, NOT the overlay storage (pulled again; `imperm lint` flags it).
      "/var/lib/containers/storage/volumes"
      "/var/lib/nixos-containers"
    ];
    check.ignore = [ "/var/lib/containers/storage/overlay*/**" ];
  };
}
