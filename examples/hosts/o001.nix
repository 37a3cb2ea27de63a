# O001, the gateway VPS (seed, phase 1): btrfs subvolumes; Vaultwarden is critical.
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
      "/var/lib/vaultwarden"
      "/var/lib/postgresql"
      "/var/lib/fail2ban"
    ];
  };
}
