# The imperm NixOS module: turns a host into an ephemeral-root host with the seed's server
# template and per-host additions, resets the root in the systemd initrd, records the
# baseline early in stage 2, and garbage-collects old roots on a timer.
#
# It configures nix-community/impermanence's `environment.persistence`, so that module must
# be imported too (the flake's nixosModules.default does both).
{
  config,
  lib,
  utils,
  ...
}:
let
  cfg = config.services.imperm;
  imperm = import ./lib.nix;
  inherit (lib) mkOption mkEnableOption mkIf types;

  entry = types.either types.str (types.attrsOf types.anything);
  keep = types.either types.ints.unsigned (types.enum [ "all" ]);
  subvolumes = cfg.filesystem.type != "tmpfs";
  persisted = imperm.hostPersistence cfg;
  paths = if cfg.filesystem.device == null then null else imperm.devicePaths cfg.filesystem.type cfg.filesystem.device;
  # What imperm mounts: a path the kernel takes (a `UUID=` spelling is not one).
  device =
    if paths == null then cfg.filesystem.device
    else if builtins.length paths > 1 then cfg.filesystem.device
    else builtins.head paths;
  # The unit(s) systemd creates for it, which the reset waits for.
  deviceUnits = map (p: "${utils.escapeSystemdPath p}.device") (if paths == null then [ ] else paths);
  resetArgs = lib.escapeShellArgs (
    [
      "reset"
      "--fs"
      cfg.filesystem.type
      "--device"
      device
      "--root-subvolume"
      cfg.filesystem.rootSubvolume
      "--snapshot-dir"
      cfg.filesystem.snapshotDir
    ]
    ++ lib.optionals (cfg.filesystem.blankSnapshot != null) [
      "--blank-snapshot"
      cfg.filesystem.blankSnapshot
    ]
  );
in
{
  options.services.imperm = {
    enable = mkEnableOption "an ephemeral root managed by imperm";

    package = mkOption {
      type = types.package;
      description = "The imperm package (the flake sets its own).";
    };

    filesystem = {
      type = mkOption {
        type = types.enum [ "bcachefs" "btrfs" "tmpfs" ];
        description = "What the root is: a bcachefs or btrfs subvolume reset at boot, or a tmpfs.";
      };
      device = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/dev/disk/by-label/nixos";
        description = "The device holding the root subvolume (not for tmpfs).";
      };
      rootSubvolume = mkOption {
        type = types.str;
        default = "@root";
        description = "The root subvolume, relative to the filesystem's top level.";
      };
      snapshotDir = mkOption {
        type = types.str;
        default = "@snapshots";
        description = "Where old roots are kept, relative to the top level.";
      };
      blankSnapshot = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "A subvolume every fresh root is a snapshot of; null for an empty root.";
      };
      after = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "systemd-cryptsetup@cryptroot.service" ];
        description = "Initrd units the reset waits for besides the device: an unlock, for one.";
      };
    };

    tmpfsRoot = {
      enable = mkEnableOption "a tmpfs root (VPS hosts with RAM to spare, the seed's option C)";
      size = mkOption {
        type = types.str;
        default = "2G";
        description = "The tmpfs's size.";
      };
    };

    persistentStoragePath = mkOption {
      type = types.str;
      default = "/persist";
      description = "Where persisted state lives (a filesystem of its own, needed for boot).";
    };

    template = mkOption {
      type = types.enum [ "server" "none" ];
      default = "server";
      description = ''The persisted set every host starts from: "server" is the seed's minimal server set.'';
    };

    directories = mkOption {
      type = types.listOf entry;
      default = [ ];
      description = "Directories persisted on top of the template (impermanence's format).";
    };

    files = mkOption {
      type = types.listOf entry;
      default = [ ];
      description = "Files persisted on top of the template (impermanence's format).";
    };

    users = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
      example = { josh.directories = [ ".ssh" ".gnupg" ]; };
      description = "Per-user directories and files, relative to the home directory.";
    };

    retention = mkOption {
      type = types.submodule {
        options = {
          keepLast = mkOption { type = keep; default = 5; description = "The newest N old roots."; };
          keepDaily = mkOption { type = keep; default = 0; description = "One a day for N days."; };
          keepWeekly = mkOption { type = keep; default = 4; description = "One a week for N ISO weeks."; };
          keepMonthly = mkOption { type = keep; default = "all"; description = "One a month for N months."; };
          keepYearly = mkOption { type = keep; default = 0; description = "One a year for N years."; };
          timezone = mkOption { type = types.nullOr types.str; default = null; description = "Zone of the calendar; null is local time."; };
        };
      };
      default = { };
      description = "Which old roots `imperm snapshots gc` keeps (the default is the seed's).";
    };

    gc.dates = mkOption {
      type = types.nullOr types.str;
      default = "daily";
      description = "When old roots are garbage-collected (systemd calendar), or null for never.";
    };

    check = {
      ignore = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Globs over absolute paths accepted as ephemeral by check, audit and diff.";
      };
      rules = mkOption {
        # A submodule: a rule without a verdict, or with a key imperm does not read, is an
        # error naming the option, not a bare "attribute missing" or a key dropped unseen.
        type = types.listOf (types.submodule {
          options = {
            path = mkOption { type = types.str; description = "A path or glob (`*`, `**`; `~` for every home)."; };
            verdict = mkOption { type = types.enum [ "persist" "review" "ephemeral" "generated" ]; description = "What to do with what matches."; };
            reason = mkOption { type = types.str; default = "set in the NixOS configuration"; description = "Why, as the output says it."; };
          };
        });
        default = [ ];
        example = [ { path = "/srv/*"; verdict = "persist"; reason = "the NAS's shares"; } ];
        description = "Own classification rules, applied before imperm's knowledge.";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.tmpfsRoot.enable -> cfg.filesystem.type == "tmpfs";
        message = "services.imperm.tmpfsRoot needs services.imperm.filesystem.type = \"tmpfs\".";
      }
      {
        assertion = subvolumes -> device != null;
        message = "services.imperm.filesystem.device is needed to reset a ${cfg.filesystem.type} root.";
      }
      {
        assertion = subvolumes && cfg.filesystem.device != null -> paths != null;
        message = "services.imperm.filesystem.device = \"${toString cfg.filesystem.device}\": imperm waits for the device's unit, and knows it for /dev/… paths, UUID=, LABEL=, PARTUUID=, PARTLABEL= and (bcachefs) /dev/a:/dev/b lists; give one of those.";
      }
      {
        assertion = subvolumes -> config.boot.initrd.systemd.enable;
        message = "services.imperm resets the root in the systemd initrd: set boot.initrd.systemd.enable = true.";
      }
      {
        assertion = imperm.retentionProblem cfg.retention == null;
        message = toString (imperm.retentionProblem cfg.retention);
      }
      {
        assertion =
          (config.fileSystems ? ${cfg.persistentStoragePath})
          -> config.fileSystems.${cfg.persistentStoragePath}.neededForBoot;
        message = "fileSystems.\"${cfg.persistentStoragePath}\".neededForBoot must be true: bind mounts from it happen early.";
      }
    ];

    environment.persistence.${cfg.persistentStoragePath} = {
      hideMounts = true;
      inherit (persisted) directories files;
      users = imperm.impermanenceUsers persisted.users;
    };

    # Every storage of the final environment.persistence, wherever in the configuration it
    # is declared: the file's [persistence] is what imperm believes is kept, and a path
    # missing from it would be reported as state a wipe loses.
    environment.etc."imperm/config.toml".text = imperm.hostToml (
      cfg
      // {
        storages = imperm.fromPersistence config.environment.persistence config.users.users;
        filesystem = cfg.filesystem // { inherit device; };
      }
    );

    environment.systemPackages = [ cfg.package ];

    # Only with a tmpfs root: on another type the assertion above says what is wrong,
    # where a definition would only clash with the host's own fileSystems."/".
    fileSystems."/" = mkIf (cfg.tmpfsRoot.enable && cfg.filesystem.type == "tmpfs") {
      device = "none";
      fsType = "tmpfs";
      options = [ "defaults" "size=${cfg.tmpfsRoot.size}" "mode=755" ];
    };

    boot.initrd.systemd = mkIf subvolumes {
      # imperm alone: it issues the subvolume ioctls itself, on bcachefs too (nixpkgs'
      # bcachefs module puts its own tool there for the unlock; a second one would conflict).
      extraBin.imperm = "${cfg.package}/bin/imperm";
      services.imperm-reset = {
        description = "Keep the old root as a snapshot and start from a blank one";
        wantedBy = [ "initrd.target" ];
        requires = deviceUnits;
        # After a resume from hibernation was tried (it runs before sysroot.mount and, when
        # there is an image, never returns): a resumed system must find its root as it
        # left it, never reset under it.
        after = deviceUnits ++ [ "systemd-hibernate-resume.service" ] ++ cfg.filesystem.after
          ++ lib.optional (cfg.filesystem.type == "bcachefs") "unlock-bcachefs-${utils.escapeSystemdPath "/"}.service";
        before = [ "sysroot.mount" ];
        # A failed reset stops the boot rather than booting the old root, which the next
        # reset's crash recovery relies on.
        requiredBy = [ "sysroot.mount" ];
        unitConfig.DefaultDependencies = false;
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${cfg.package}/bin/imperm ${resetArgs}";
          # An encrypted bcachefs's key is in the keyring of the unit that unlocked it.
          KeyringMode = "inherit";
        };
      };
    };

    # After activation (which runs before systemd) and tmpfiles, before any service: what
    # is on the root now is what NixOS itself made.
    systemd.services.imperm-baseline = {
      description = "Record the root right after boot";
      wantedBy = [ "sysinit.target" ];
      after = [ "local-fs.target" "systemd-tmpfiles-setup.service" ];
      before = [ "sysinit.target" "shutdown.target" ];
      conflicts = [ "shutdown.target" ];
      unitConfig.DefaultDependencies = false;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/imperm baseline";
      };
    };

    systemd.services.imperm-gc = mkIf (subvolumes && cfg.gc.dates != null) {
      description = "Delete old roots the retention policy does not keep";
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${cfg.package}/bin/imperm snapshots gc";
      };
    };
    systemd.timers.imperm-gc = mkIf (subvolumes && cfg.gc.dates != null) {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.gc.dates;
        Persistent = true;
      };
    };
  };
}
