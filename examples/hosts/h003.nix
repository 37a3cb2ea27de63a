# H003, the router (seed, phase 2): btrfs on LUKS; the reset waits for the unlock.
#
# The LUKS key (the seed's "/boot/keyfile_nvme0n1p1 — CRITICAL") is not in the persisted
# set: the initrd unlocks the root before any bind mount exists, so it reads the key from
# inside the initrd (boot.initrd.secrets copies it in at every nixos-rebuild). Its source
# lives in /persist, which is never wiped: on the root it would be gone after the first
# reset and the next rebuild would fail; on the separate vfat /boot it is not wiped either,
# and persisting it there only makes impermanence demand /boot in the initrd
# (neededForBoot) for a bind mount that keeps nothing.
{ ... }:
{
  boot.initrd.systemd.enable = true;
  boot.initrd.secrets."/keyfile_nvme0n1p1" = "/persist/keys/keyfile_nvme0n1p1";
  boot.initrd.luks.devices.cryptroot = {
    device = "/dev/nvme0n1p2";
    keyFile = "/keyfile_nvme0n1p1";
  };
  fileSystems = {
    "/boot" = {
      device = "/dev/nvme0n1p1";
      fsType = "vfat";
    };
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
  };
}
