# The parts of NixOS that imperm's module, nix-community/impermanence and
# nix-community/preservation touch, declared
# with the types NixOS gives them (nixos/modules/system/boot/systemd, tasks/filesystems,
# config/users-groups, system/activation, misc/assertions), and nothing more: an option
# either module sets that is not declared here is an evaluation error, as it would be on a
# host whose NixOS has no such option. Written for imperm's module tests (tests/module/run);
# NixOS itself (nixpkgs, 4.4 GB) cannot be had on the test machines.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  strs = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  # systemd's unit settings: a value or a list of them (nixos/lib/systemd-unit-options.nix).
  unitOption = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
    (types.listOf (types.oneOf [ types.bool types.int types.str types.path ]))
  ];
  settings = mkOption {
    type = types.attrsOf unitOption;
    default = { };
  };
  unit = {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = strs;
      requiredBy = strs;
      wants = strs;
      requires = strs;
      after = strs;
      before = strs;
      conflicts = strs;
      partOf = strs;
      bindsTo = strs;
      onFailure = strs;
      unitConfig = settings;
    };
  };
  service = {
    imports = [ unit ];
    options = {
      serviceConfig = settings;
      path = mkOption {
        type = types.listOf (types.either types.package types.str);
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
        default = { };
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
      preStart = mkOption {
        type = types.lines;
        default = "";
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      startAt = mkOption {
        type = types.either types.str (types.listOf types.str);
        default = [ ];
      };
    };
  };
  mount = {
    imports = [ unit ];
    options = {
      what = mkOption { type = types.str; };
      where = mkOption { type = types.str; };
      type = mkOption {
        type = types.str;
        default = "";
      };
      options = mkOption {
        type = types.commas;
        default = "";
      };
      mountConfig = settings;
    };
  };
  timer = {
    imports = [ unit ];
    options.timerConfig = settings;
  };
  # systemd.tmpfiles.settings (nixos/modules/system/boot/systemd/tmpfiles.nix): file ->
  # path -> type -> rule.
  tmpfiles = mkOption {
    type = types.attrsOf (
      types.attrsOf (
        types.attrsOf (
          types.submodule (
            { name, ... }:
            {
              options = {
                type = mkOption {
                  type = types.str;
                  default = name;
                };
                mode = mkOption {
                  type = types.str;
                  default = "-";
                };
                user = mkOption {
                  type = types.str;
                  default = "-";
                };
                group = mkOption {
                  type = types.str;
                  default = "-";
                };
                age = mkOption {
                  type = types.str;
                  default = "-";
                };
                argument = mkOption {
                  type = types.str;
                  default = "";
                };
              };
            }
          )
        )
      )
    );
    default = { };
  };
  targets = mkOption {
    type = types.attrsOf (types.submodule unit);
    default = { };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    boot.supportedFilesystems = mkOption {
      type = types.either (types.listOf types.str) (types.attrsOf types.bool);
      default = [ ];
    };
    boot.initrd.supportedFilesystems = mkOption {
      type = types.either (types.listOf types.str) (types.attrsOf types.bool);
      default = [ ];
    };
    boot.initrd.luks.devices = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            device = mkOption { type = types.str; };
            keyFile = mkOption {
              type = types.nullOr types.str;
              default = null;
            };
            allowDiscards = mkOption {
              type = types.bool;
              default = false;
            };
          };
        }
      );
      default = { };
    };
    boot.initrd.secrets = mkOption {
      type = types.attrsOf (types.nullOr types.path);
      default = { };
    };
    boot.initrd.postMountCommands = mkOption {
      type = types.lines;
      default = "";
    };
    boot.initrd.systemd = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      extraBin = mkOption {
        type = types.attrsOf types.path;
        default = { };
      };
      services = mkOption {
        type = types.attrsOf (types.submodule service);
        default = { };
      };
      mounts = mkOption {
        type = types.listOf (types.submodule mount);
        default = [ ];
      };
      suppressedUnits = strs;
      targets = targets;
      tmpfiles.settings = tmpfiles;
    };

    systemd.services = mkOption {
      type = types.attrsOf (types.submodule service);
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf (types.submodule timer);
      default = { };
    };
    systemd.mounts = mkOption {
      type = types.listOf (types.submodule mount);
      default = [ ];
    };
    systemd.suppressedSystemUnits = strs;
    systemd.targets = targets;
    systemd.tmpfiles.settings = tmpfiles;

    fileSystems = mkOption {
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            options = {
              mountPoint = mkOption {
                type = types.str;
                default = name;
              };
              device = mkOption {
                type = types.nullOr types.str;
                default = null;
              };
              fsType = mkOption {
                type = types.str;
                default = "auto";
              };
              options = mkOption {
                type = types.nonEmptyListOf types.str;
                default = [ "defaults" ];
              };
              neededForBoot = mkOption {
                type = types.bool;
                default = false;
              };
              depends = strs;
            };
          }
        )
      );
      default = { };
    };

    system.activationScripts = mkOption {
      type = types.attrsOf (
        types.either types.str (
          types.submodule {
            options = {
              deps = strs;
              text = mkOption { type = types.lines; };
              supportsDryActivation = mkOption {
                type = types.bool;
                default = false;
              };
            };
          }
        )
      );
      default = { };
    };

    environment.etc = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            text = mkOption {
              type = types.nullOr types.lines;
              default = null;
            };
            source = mkOption {
              type = types.nullOr types.path;
              default = null;
            };
            mode = mkOption {
              type = types.str;
              default = "symlink";
            };
          };
        }
      );
      default = { };
    };
    system.checks = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };

    users.users = mkOption {
      type = types.attrsOf (
        types.submodule (
          { name, config, ... }:
          {
            options = {
              name = mkOption {
                type = types.str;
                default = name;
              };
              isNormalUser = mkOption {
                type = types.bool;
                default = false;
              };
              isSystemUser = mkOption {
                type = types.bool;
                default = false;
              };
              uid = mkOption {
                type = types.nullOr types.int;
                default = null;
              };
              group = mkOption {
                type = types.str;
                # NixOS gives normal users "users" (mkDefault under isNormalUser).
                default = if config.isNormalUser then "users" else "";
              };
              home = mkOption {
                type = types.str;
                default = if config.isNormalUser then "/home/${name}" else "/var/empty";
              };
              homeMode = mkOption {
                type = types.strMatching "[0-7]{1,5}";
                default = "700";
              };
            };
          }
        )
      );
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.gid = mkOption {
            type = types.nullOr types.int;
            default = null;
          };
        }
      );
      default = { };
    };
  };

  config.users.users.root = {
    uid = 0;
    group = "root";
    home = "/root";
  };
  config.users.groups.root.gid = 0;
}
