# The imperm NixOS module: turns a host into an ephemeral-root host with the seed's server
# template and per-host additions, resets the root in the systemd initrd, records the
# baseline early in stage 2, and garbage-collects old roots on a timer.
#
# It configures nix-community/impermanence's `environment.persistence`, so that module must
# be imported too (the flake's nixosModules.default does both).
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.services.imperm;
  imperm = import ./lib.nix;
  inherit (lib) mkOption mkEnableOption mkIf types;

  entry = types.either types.str (types.attrsOf types.anything);
  # imperm reads counts as 32-bit.
  keep = types.either types.ints.u32 (types.enum [ "all" ]);
  subvolumes = cfg.filesystem.type != "tmpfs";
  # The root's device as udev names it, to compare with the one the reset is given.
  rootPaths =
    let
      d = config.fileSystems."/".device or null;
    in
    if d == null then null else imperm.devicePaths cfg.filesystem.type d;
  # Filesystems of their own, which no reset wipes: template entries on them are left out.
  separateMounts = map (fs: fs.mountPoint) (
    builtins.filter (
      fs: fs.mountPoint != "/" && !(builtins.elem fs.fsType [ "tmpfs" "ramfs" ]) && !(builtins.elem "bind" fs.options)
    ) (builtins.attrValues config.fileSystems)
  );
  persisted = imperm.hostPersistence (cfg // { inherit separateMounts; });
  paths = if cfg.filesystem.device == null then null else imperm.devicePaths cfg.filesystem.type cfg.filesystem.device;
  # What imperm mounts: a path the kernel takes (a `UUID=` spelling is not one).
  device = imperm.resetDevice cfg.filesystem;
  # The unit(s) systemd creates for it, which the reset waits for.
  deviceUnits = map (p: "${utils.escapeSystemdPath p}.device") (if paths == null then [ ] else paths);
  # Every storage of the final environment.persistence, wherever in the configuration it
  # is declared, and of preservation's preserveAt when that module is imported and on (it
  # mounts as well), and each persisted path in them.
  preserved =
    if config ? preservation && (config.preservation.enable or false) then
      imperm.fromPreservation config.preservation.preserveAt
    else
      { };
  storages = imperm.mergeStorages (imperm.mergeStorages (imperm.fromPersistence config.environment.persistence config.users.users) preserved) (
    imperm.fromHomeManager (config.home-manager.users or { })
  );
  persistedPaths = imperm.persistedPaths storages config.users.users;
  offRoot = imperm.offRootPaths persistedPaths (builtins.attrValues config.fileSystems);
  # What reads a file during activation or early in stage 2, before impermanence's bind
  # mounts and links exist. sops-nix and agenix are optional modules: read only when
  # imported (an undeclared option is an error, `config ? sops` is not).
  sopsEarly = config ? sops && builtins.any (s: s.neededForUsers or false) (builtins.attrValues (config.sops.secrets or { }));
  # agenix does nothing without secrets (its whole configuration is under that condition).
  agenixEarly = config ? age && (config.age.secrets or { }) != { };
  sopsFix = "point sops.age.sshKeyPaths and sops.gnupg.sshKeyPaths (which defaults to the RSA host keys: set it to [ ] if you use age) at the storage's copy, or keep the file with preservation's inInitrd = true";
  machineIdCommit = config.systemd.services.systemd-machine-id-commit or { };
  earlyReads = map (r: r // { path = toString r.path; }) (
    lib.optionals sopsEarly (
      map (path: { inherit path; reader = "sops-nix (secrets neededForUsers, decrypted before impermanence's bind mounts)"; fix = sopsFix; }) (
        (config.sops.age.sshKeyPaths or [ ]) ++ (config.sops.gnupg.sshKeyPaths or [ ])
      )
      ++ lib.optional ((config.sops.age.keyFile or null) != null) {
        path = config.sops.age.keyFile;
        reader = "sops-nix (sops.age.keyFile, read before impermanence's bind mounts for secrets neededForUsers)";
        fix = "point sops.age.keyFile at the storage's copy, or keep the file with preservation's inInitrd = true";
      }
    )
    ++ lib.optionals agenixEarly (
      map (path: { inherit path; reader = "agenix (age.identityPaths, decrypted during activation)"; }) (config.age.identityPaths or [ ])
    )
    # Unless it runs on the first boot only (impermanence's own workaround since 2024-12),
    # the commit unit sees the bind mount, takes it for a transient id and fails.
    ++ lib.optional (
      (machineIdCommit.unitConfig.ConditionFirstBoot or null) != true
      && !(builtins.elem "systemd-machine-id-commit.service" (config.systemd.suppressedSystemUnits or [ ]))
    ) {
      path = "/etc/machine-id";
      reader = "systemd-machine-id-commit.service, at every boot";
      # Mounted in the initrd or not, the unit takes the mount for a transient id.
      evenInInitrd = true;
      fix = "run it on the first boot only (systemd.services.systemd-machine-id-commit.unitConfig.ConditionFirstBoot = true, as current impermanence does), or suppress it (systemd.suppressedSystemUnits = [ \"systemd-machine-id-commit.service\" ], as preservation's documentation does)";
    }
  );
  # Only storages that hold something: an unused default (/persist on a host that keeps
  # everything in /nix/persist) needs no filesystem.
  storagePaths = lib.unique (map (p: p.storage) persistedPaths);
  storageSettings = {
    storages = storagePaths;
    filesystems = builtins.attrValues config.fileSystems;
    rootSubvolume = if subvolumes then cfg.filesystem.rootSubvolume else null;
  };
  problems =
    imperm.storageProblems storageSettings
    ++ lib.optionals (cfg.template == "server") (imperm.templateDuplicates persistedPaths)
    ++ imperm.entryProblems storages config.users.users
    ++ lib.optionals (subvolumes || cfg.filesystem.type == "tmpfs") (imperm.rootProblems cfg.filesystem (config.fileSystems."/" or null))
    ++ lib.optional (subvolumes && imperm.layoutProblem cfg.filesystem != null) (imperm.layoutProblem cfg.filesystem)
    ++ map (name: "services.imperm.users.${name}: there is no users.users.${name} (impermanence takes the home and group from it)") (
      builtins.filter (name: !(config.users.users ? ${name})) (builtins.attrNames cfg.users)
    )
    ++ lib.concatLists (
      lib.mapAttrsToList (
        name: u:
        lib.optional (u.home != null && u.home != (config.users.users.${name}.home or null))
          "services.imperm.users.${name}.home is ${builtins.toJSON u.home}, but the home is users.users.${name}.home (${builtins.toJSON (config.users.users.${name}.home or null)}), which impermanence and imperm both take: set that instead"
      ) cfg.users
    );
  # The configuration file as imperm reads it, checked by imperm itself when the system is
  # built: whatever the assertions above let through, the host never gets a file that
  # `baseline`, `gc` or `check` would refuse.
  configText = imperm.hostToml (
    cfg
    // {
      inherit storages;
      earlyReads = imperm.unsettledReads persistedPaths earlyReads;
      filesystem = cfg.filesystem // { inherit device; };
      # A running host cannot tell what its initrd mounts: `imperm status` reads it here.
      neededForBoot = imperm.neededForBootStorages storageSettings;
    }
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
        default = if subvolumes then config.fileSystems."/".device or null else null;
        defaultText = lib.literalExpression ''config.fileSystems."/".device'';
        example = "/dev/disk/by-label/nixos";
        description = "The device holding the root subvolume (not for tmpfs); the root's own by default.";
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
      # Lists that merge across modules, as the system lists do.
      type = types.attrsOf (types.submodule {
        options = {
          directories = mkOption { type = types.listOf entry; default = [ ]; description = "Directories, relative to the home."; };
          files = mkOption { type = types.listOf entry; default = [ ]; description = "Files, relative to the home."; };
          home = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Not used: the home is users.users.<name>.home; an assertion says so when this differs.";
          };
        };
      });
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
          timezone = mkOption { type = types.nullOr types.nonEmptyStr; default = null; description = "Zone of the calendar; null is local time."; };
        };
      };
      default = { };
      description = "Which old roots `imperm snapshots gc` keeps (the default is the seed's).";
    };

    gc.dates = mkOption {
      # One line of a timer unit: an empty value would reset OnCalendar= to never.
      type = types.nullOr (types.strMatching "[^[:cntrl:]]+");
      default = "daily";
      description = "When old roots are garbage-collected (systemd calendar), or null for never.";
    };

    check = {
      ignore = mkOption {
        type = types.listOf (types.strMatching "(/|[*][*]).*");
        default = [ ];
        description = "Globs over absolute paths accepted as ephemeral by check, audit and diff.";
      };
      rules = mkOption {
        # A submodule: a rule without a verdict, or with a key imperm does not read, is an
        # error naming the option, not a bare "attribute missing" or a key dropped unseen.
        type = types.listOf (types.submodule {
          options = {
            path = mkOption { type = types.strMatching "[/~].*"; description = "A path or glob (`*`, `**`; `~` for every home)."; };
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
        message = "services.imperm.filesystem.device = ${builtins.toJSON (toString cfg.filesystem.device)}: imperm waits for the device's unit, and knows it for normal /dev/… paths, UUID=, LABEL=, PARTUUID=, PARTLABEL= and (bcachefs) /dev/a:/dev/b lists, made of letters, digits and #+-.:=@_ (udev writes other characters, such as a space in a label, as \\xNN in its link's name); give one of those, UUID= for such a label.";
      }
      {
        assertion = subvolumes -> config.boot.initrd.systemd.enable;
        message = "services.imperm resets the root in the systemd initrd: set boot.initrd.systemd.enable = true.";
      }
      {
        assertion = imperm.retentionProblem cfg.retention == null;
        message = toString (imperm.retentionProblem cfg.retention);
      }
    ]
    ++ map (message: { assertion = false; inherit message; }) problems
    # A persisted path on another filesystem fails impermanence's neededForBoot assertion
    # with no word of why; this one says what to do (the seed's router key on /boot).
    ++ map (o: { assertion = o.neededForBoot; inherit (o) message; }) offRoot;

    warnings = map (o: o.message) (builtins.filter (o: o.neededForBoot) offRoot)
      ++ imperm.earlyBootProblems persistedPaths earlyReads
      ++ lib.optional (
        subvolumes && cfg.filesystem.device != null && rootPaths != null && paths != null && rootPaths != paths
      ) "services.imperm.filesystem.device is ${builtins.toJSON cfg.filesystem.device} but fileSystems.\"/\".device is ${builtins.toJSON config.fileSystems."/".device}: unless they are two names of one device, the reset acts on another filesystem than the root (leave services.imperm.filesystem.device unset to take the root's)";

    environment.persistence.${cfg.persistentStoragePath} = {
      hideMounts = true;
      inherit (persisted) directories files;
      # A user without users.users.NAME is the assertion below, not impermanence's bare
      # "attribute missing".
      users = imperm.impermanenceUsers (lib.filterAttrs (name: _: config.users.users ? ${name}) persisted.users);
    };

    # Every storage: the file's [persistence] is what imperm believes is kept, and a path
    # missing from it would be reported as state a wipe loses. The early readers go with
    # it, so that `imperm lint` on the host says what the evaluation warned of.
    environment.etc."imperm/config.toml".text = configText;
    system.checks = [
      # A build has no /usr/share/zoneinfo: a time zone in [retention] needs the database.
      (pkgs.runCommand "imperm-config-check" { TZDIR = "${pkgs.tzdata}/share/zoneinfo"; } ''
        mkdir root
        status=0
        ${cfg.package}/bin/imperm --root root --config ${pkgs.writeText "imperm-config.toml" configText} lint || status=$?
        # 1 is findings (lint's own business); 2 is a file imperm refuses.
        if [ "$status" -eq 2 ]; then exit 1; fi
        touch $out
      '')
    ];

    environment.systemPackages = [ cfg.package ];

    # Only with a tmpfs root: on another type the assertion above says what is wrong,
    # where a definition would only clash with the host's own fileSystems."/".
    # At default priority: a host's own fileSystems."/" (hardware-configuration.nix) wins
    # over it without a merge conflict, and the assertion then says to take that out.
    fileSystems."/" = mkIf (cfg.tmpfsRoot.enable && cfg.filesystem.type == "tmpfs") (lib.mapAttrs (_: lib.mkDefault) {
      device = "none";
      fsType = "tmpfs";
      options = [ "defaults" "size=${cfg.tmpfsRoot.size}" "mode=755" ];
    });

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
          ExecStart = imperm.resetCommand "${cfg.package}" cfg.filesystem;
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
