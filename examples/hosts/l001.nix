# L001, the headscale VPS (seed, phase 1): a tmpfs root (the seed's option C), nothing to
# reset; state on a small persistent disk.
{ ... }:
{
  fileSystems."/nix" = {
    device = "/dev/disk/by-label/nix";
    fsType = "ext4";
  };
  fileSystems."/persist" = {
    device = "/dev/disk/by-label/persist";
    fsType = "ext4";
    neededForBoot = true;
  };

  services.imperm = {
    enable = true;
    filesystem.type = "tmpfs";
    tmpfsRoot = {
      enable = true;
      size = "1G";
    };
    directories = [ "/var/lib/headscale" ];
  };
}
