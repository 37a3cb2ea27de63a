# Juni, the laptop that already runs impermanence (seed): bcachefs with @root, @nix,
# @persist and @snapshots; its own persisted set instead of the server template.
{ ... }:
{
  boot.initrd.systemd.enable = true;
  boot.supportedFilesystems = [ "bcachefs" ];
  fileSystems = {
    "/" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "bcachefs";
      options = [ "X-mount.subdir=@root" ];
    };
    "/nix" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "bcachefs";
      options = [ "X-mount.subdir=@nix" ];
    };
    "/persist" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "bcachefs";
      options = [ "X-mount.subdir=@persist" ];
      neededForBoot = true;
    };
  };

  # impermanence takes each persisted user's home and group from here.
  users.users.josh = {
    isNormalUser = true;
    home = "/home/josh";
    group = "users";
  };

  services.imperm = {
    enable = true;
    filesystem = {
      type = "bcachefs";
      device = "/dev/disk/by-label/nixos";
    };
    template = "none";
    directories = [
      "/var/log"
      "/var/lib/nixos"
      "/var/lib/systemd"
      "/var/lib/tailscale"
      "/var/lib/flatpak"
      "/etc/NetworkManager/system-connections"
    ];
    files = [
      "/etc/machine-id"
      "/etc/ssh/ssh_host_ed25519_key"
      "/etc/ssh/ssh_host_ed25519_key.pub"
      "/etc/ssh/ssh_host_rsa_key"
      "/etc/ssh/ssh_host_rsa_key.pub"
    ];
    users.josh.directories = [
      ".ssh"
      { directory = ".gnupg"; mode = "0700"; }
      "projects"
      ".config"
      ".local/share"
    ];
    # bcache-impermanence's policy: 5 recent, 1 a week for 4 weeks, 1 a month.
    retention = {
      keepLast = 5;
      keepWeekly = 4;
      keepMonthly = "all";
    };
  };
}
