# H003, the router (seed, phase 2): btrfs on LUKS; the reset waits for the unlock. The LUKS
# keyfile is persisted (CRITICAL: without it the disk does not unlock).
{ ... }:
{
  boot.initrd.systemd.enable = true;
  boot.initrd.luks.devices.cryptroot = {
    device = "/dev/nvme0n1p2";
    keyFile = "/boot/keyfile_nvme0n1p1";
  };
  fileSystems = {
    "/" = {
      device = "/dev/mapper/cryptroot";
      fsType = "btrfs";
      options = [ "subvol=@root" ];
    };
    "/nix" = {
      device = "/dev/mapper/cryptroot";
      fsType = "btrfs";
      options = [ "subvol=@nix" "noatime" ];
    };
    "/persist" = {
      device = "/dev/mapper/cryptroot";
      fsType = "btrfs";
      options = [ "subvol=@persist" ];
      neededForBoot = true;
    };
  };

  services.imperm = {
    enable = true;
    filesystem = {
      type = "btrfs";
      device = "/dev/mapper/cryptroot";
      after = [ "systemd-cryptsetup@cryptroot.service" ];
    };
    directories = [
      # AdGuard Home runs with DynamicUser=: its state is in /var/lib/private, 0700.
      { directory = "/var/lib/private"; mode = "0700"; }
      "/var/lib/dnsmasq"
    ];
    files = [ "/boot/keyfile_nvme0n1p1" ];
  };
}
