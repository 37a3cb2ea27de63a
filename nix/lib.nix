# Pure functions of the imperm module, written with builtins only so that they evaluate
# without nixpkgs (`nix-instantiate --eval --strict`), which is how the tests check them.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    hasAttr
    isAttrs
    isBool
    isInt
    isList
    isString
    listToAttrs
    map
    toJSON
    ;

  # A TOML basic string: JSON's escapes (\" \\ \n \uXXXX) are TOML's too.
  str = toJSON;

  # A bare TOML key when it can be one, else a quoted one.
  key = k: if builtins.match "[A-Za-z0-9_-]+" k != null then k else str k;

  value =
    v:
    if isString v then
      str v
    else if isBool v then
      (if v then "true" else "false")
    else if isInt v then
      toString v
    else if isList v then
      "[" + concatStringsSep ", " (map value v) + "]"
    else if isAttrs v then
      "{ " + concatStringsSep ", " (map (k: "${key k} = ${value v.${k}}") (attrNames v)) + " }"
    else
      throw "imperm: cannot write ${builtins.typeOf v} to TOML";

  # The attributes of an impermanence entry that imperm's configuration takes.
  entryKeys = [ "directory" "file" "user" "group" "mode" "parentDirectory" "persistentStoragePath" ];
  entry =
    e:
    if isString e then
      e
    else
      listToAttrs (
        map (k: { name = k; value = e.${k}; }) (filter (k: hasAttr k e && e.${k} != null) entryKeys)
      );

  line = k: v: "${key k} = ${value v}";
  section = header: lines: concatStringsSep "\n" ([ header ] ++ lines) + "\n";
  optional = cond: xs: if cond then xs else [ ];
in
rec {
  # The seed's "Minimal Server Persistence": data/server-template.toml, the same set.
  serverTemplate = {
    directories = [
      "/var/lib/nixos"
      "/var/lib/systemd/coredump"
      "/var/log"
      "/var/lib/tailscale"
      "/etc/NetworkManager/system-connections"
      "/var/lib/acme"
    ];
    files = [
      "/etc/machine-id"
      "/etc/ssh/ssh_host_ed25519_key"
      "/etc/ssh/ssh_host_ed25519_key.pub"
      "/etc/ssh/ssh_host_rsa_key"
      "/etc/ssh/ssh_host_rsa_key.pub"
    ];
  };

  # /etc/imperm/config.toml from the module's settings.
  configToml =
    {
      filesystem ? null, # { type, device ? null, rootSubvolume, snapshotDir, blankSnapshot ? null }
      storage ? "/persist",
      directories ? [ ],
      files ? [ ],
      users ? { }, # name -> { directories ? [ ]; files ? [ ]; home ? null; }
      # Every storage at once (storage -> { directories; files; users; }), as
      # `fromPersistence` gives them; when set, the four above are not used.
      storages ? null,
      retention ? null, # { keepLast ? 0; …; timezone ? null; }
      checkIgnore ? [ ],
      checkRules ? [ ], # [ { path; verdict; reason; } ]
      earlyReads ? [ ], # [ { path; reader; fix ? null; } ]
    }:
    let
      fs = optional (filesystem != null) [
        (section "[filesystem]" (
          [ (line "type" filesystem.type) ]
          ++ optional ((filesystem.device or null) != null) [ (line "device" filesystem.device) ]
          ++ [
            (line "root_subvolume" filesystem.rootSubvolume)
            (line "snapshot_dir" filesystem.snapshotDir)
          ]
          ++ optional ((filesystem.blankSnapshot or null) != null) [
            (line "blank_snapshot" filesystem.blankSnapshot)
          ]
        ))
      ];
      all = if storages != null then storages else { ${storage} = { inherit directories files users; }; };
      storageSections =
        name:
        let
          st = all.${name};
          stUsers = st.users or { };
        in
        [
          (section "[persistence.${key name}]" [
            (line "hideMounts" true)
            (line "directories" (map entry (st.directories or [ ])))
            (line "files" (map entry (st.files or [ ])))
          ])
        ]
        ++ map (
          user:
          let
            u = stUsers.${user};
          in
          section "[persistence.${key name}.users.${key user}]" (
            optional ((u.home or null) != null) [ (line "home" u.home) ]
            ++ [
              (line "directories" (map entry (u.directories or [ ])))
              (line "files" (map entry (u.files or [ ])))
            ]
          )
        ) (attrNames stUsers);
      persistence = builtins.concatMap storageSections (attrNames all);
      userSections = [ ];
      keep = name: optional ((retention.${name} or 0) != 0) [ (line name retention.${name}) ];
      ret = optional (retention != null) [
        (section "[retention]" (
          keep "keep_last"
          ++ keep "keep_daily"
          ++ keep "keep_weekly"
          ++ keep "keep_monthly"
          ++ keep "keep_yearly"
          ++ optional ((retention.timezone or null) != null) [ (line "timezone" retention.timezone) ]
        ))
      ];
      check = [ (section "[check]" [ (line "ignore" checkIgnore) ]) ];
      ruleKeys = [ "path" "verdict" "reason" ];
      rules = map (
        r:
        let
          at = "services.imperm.check.rules: the rule for ${r.path or "(no path)"}";
          unknown = filter (k: !(builtins.elem k ruleKeys)) (attrNames r);
        in
        if unknown != [ ] then
          throw "${at} has ${concatStringsSep ", " unknown}, which imperm does not read (it reads path, verdict, reason)"
        else if !(r ? path) || !(r ? verdict) then
          throw "${at} needs both path and verdict (persist, review, ephemeral or generated)"
        else
          section "[[check.rule]]" [
            (line "path" r.path)
            (line "verdict" r.verdict)
            (line "reason" (r.reason or "set in the NixOS configuration"))
          ]
      ) checkRules;
      early = map (
        r:
        section "[[early_read]]" (
          [
            (line "path" r.path)
            (line "reader" r.reader)
          ]
          ++ optional ((r.fix or null) != null) [ (line "fix" r.fix) ]
        )
      ) earlyReads;
    in
    concatStringsSep "\n" (
      [ "# Written by the imperm NixOS module; edit the module's options instead.\n" ]
      ++ fs
      ++ persistence
      ++ userSections
      ++ ret
      ++ check
      ++ rules
      ++ early
    );

  # The persisted set of a host: the template (unless "none") and its own additions.
  # `host` is services.imperm's settings; missing ones take the options' defaults.
  hostPersistence =
    host:
    let
      template = if (host.template or "server") == "server" then serverTemplate else { directories = [ ]; files = [ ]; };
    in
    {
      directories = template.directories ++ (host.directories or [ ]);
      files = template.files ++ (host.files or [ ]);
      users = host.users or { };
    };

  # The device paths behind a `fileSystems.<n>.device` spelling, as udev names them, or
  # null for one imperm cannot wait for: `/dev/…` as it is, `UUID=`, `LABEL=`, `PARTUUID=`,
  # `PARTLABEL=` as their /dev/disk/by-* links, and for bcachefs a `:`-separated list of
  # members (each of which must appear).
  devicePaths =
    fsType: device:
    let
      prefixed = builtins.match "(UUID|LABEL|PARTUUID|PARTLABEL)=(.+)" device;
      byKind = {
        UUID = "by-uuid";
        LABEL = "by-label";
        PARTUUID = "by-partuuid";
        PARTLABEL = "by-partlabel";
      };
      members = builtins.filter (m: builtins.isString m && m != "") (builtins.split ":" device);
    in
    if prefixed != null then
      [ "/dev/disk/${byKind.${builtins.elemAt prefixed 0}}/${builtins.elemAt prefixed 1}" ]
    else if fsType == "bcachefs" && builtins.length members > 1 then
      (if builtins.all (m: builtins.substring 0 5 m == "/dev/") members then members else null)
    else if builtins.substring 0 5 device == "/dev/" then
      [ device ]
    else
      null;

  # The device the reset mounts, for the module's `filesystem` settings: the one path
  # `devicePaths` gives, else the spelling as it is (a bcachefs member list, or one imperm
  # cannot wait for, which the module's assertions refuse).
  resetDevice =
    fs:
    let
      paths = if (fs.device or null) == null then null else devicePaths fs.type fs.device;
    in
    if paths == null || builtins.length paths > 1 then fs.device or null else builtins.head paths;

  # nixpkgs' `lib.escapeShellArg`, with builtins only: systemd reads the result as one word.
  shellArg =
    arg:
    let
      s = toString arg;
    in
    if builtins.match "[[:alnum:],._+:@%/-]+" s != null then
      s
    else
      "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # The reset unit's ExecStart for the module's `filesystem` settings and the package's
  # path: the one place the module's command line is written, so that tests/vm boots
  # exactly this (it evaluates this function) and tests/module.rs checks the unit holds it.
  resetCommand =
    package: fs:
    "${package}/bin/imperm "
    + concatStringsSep " " (
      map shellArg (
        [
          "reset"
          "--fs"
          fs.type
          "--device"
          (resetDevice fs)
          "--root-subvolume"
          (fs.rootSubvolume or "@root")
          "--snapshot-dir"
          (fs.snapshotDir or "@snapshots")
        ]
        ++ optional ((fs.blankSnapshot or null) != null) [
          "--blank-snapshot"
          fs.blankSnapshot
        ]
      )
    );

  # Every storage of the final `environment.persistence` (what impermanence mounts, from
  # services.imperm and from anywhere else in the configuration) as `configToml`'s
  # `storages`: entries as imperm's configuration spells them, with the owner and mode
  # only where they differ from what impermanence makes by default, and a user's home
  # only where it is not imperm's default. `accounts` is users.users (home and group).
  fromPersistence =
    persistence: accounts:
    let
      differs = defaults: e: builtins.filter (k: (e.${k} or null) != null && e.${k} != defaults.${k}) (attrNames defaults);
      # An entry may name its own storage (impermanence's per-entry persistentStoragePath):
      # kept where it differs from the storage it is listed under.
      elsewhere = storage: e: if (e.persistentStoragePath or storage) != storage then [ { name = "persistentStoragePath"; value = e.persistentStoragePath; } ] else [ ];
      owned =
        storage: defaults: pathKey: e:
        let
          keys = differs defaults e;
          own = elsewhere storage e;
        in
        if keys == [ ] && own == [ ] then e.${pathKey} else listToAttrs ([ { name = pathKey; value = e.${pathKey}; } ] ++ map (k: { name = k; value = e.${k}; }) keys ++ own);
      file =
        storage: defaults: f:
        let
          parent = f.parentDirectory or { };
          keys = differs defaults parent;
          own = elsewhere storage f;
        in
        if keys == [ ] && own == [ ] then f.file
        else listToAttrs ([ { name = "file"; value = f.file; } ] ++ own ++ optional (keys != [ ]) [ { name = "parentDirectory"; value = listToAttrs (map (k: { name = k; value = parent.${k}; }) keys); } ]);
      system = { user = "root"; group = "root"; mode = "0755"; };
      defaultHome = name: if name == "root" then "/root" else "/home/${name}";
      # A storage with `enable = false` is not mounted by impermanence: what it lists is
      # wiped like anything else, so it must not be in imperm's persisted set.
      enabled = listToAttrs (map (n: { name = n; value = persistence.${n}; }) (filter (n: persistence.${n}.enable or true) (attrNames persistence)));
    in
    builtins.mapAttrs (storage: p: {
      directories = map (owned storage system "directory") (p.directories or [ ]);
      files = map (file storage system) (p.files or [ ]);
      users = builtins.mapAttrs (
        name: u:
        let
          own = { user = name; group = accounts.${name}.group or "users"; mode = "0755"; };
          home = accounts.${name}.home or null;
        in
        {
          directories = map (owned storage own "directory") (u.directories or [ ]);
          files = map (file storage own) (u.files or [ ]);
        }
        // (if home != null && home != defaultHome name then { inherit home; } else { })
      ) (p.users or { });
    }) enabled;

  # Every persisted path of `fromPersistence`'s storages, absolute (a user's entries joined
  # to the home directory, from `accounts`, users.users), as { path; storage; directory; }.
  persistedPaths =
    storages: accounts:
    let
      name = e: k: if isString e then e else e.${k};
      defaultHome = user: if user == "root" then "/root" else "/home/${user}";
      of = storage: prefix: st: map (d: { path = prefix + name d "directory"; inherit storage; directory = true; }) (st.directories or [ ])
        ++ map (f: { path = prefix + name f "file"; inherit storage; directory = false; }) (st.files or [ ]);
    in
    builtins.concatMap (
      storage:
      let
        st = storages.${storage};
        users = st.users or { };
      in
      of storage "" st
      ++ builtins.concatMap (
        user:
        let
          home = users.${user}.home or accounts.${user}.home or (defaultHome user);
        in
        of storage (if home == "/" then "/" else home + "/") users.${user}
      ) (attrNames users)
    ) (attrNames storages);

  # Whether `path` is `dir` or below it.
  isAtOrBelow = dir: path: path == dir || (dir == "/" && path != "/") || builtins.substring 0 (builtins.stringLength dir + 1) path == dir + "/";

  # Persisted paths on a filesystem of their own (a fileSystems mount point other than
  # "/", a storage or a bind mount): the reset never wipes them, so persisting them keeps
  # nothing, and impermanence then needs that filesystem in the initrd (neededForBoot).
  # `filesystems` is fileSystems' values. Gives { path; mountPoint; neededForBoot; message; }.
  offRootPaths =
    persisted: filesystems:
    let
      storages = map (p: p.storage) persisted;
      separate = filter (
        fs:
        fs.mountPoint != "/"
        && !(builtins.any (st: isAtOrBelow st fs.mountPoint) storages)
        && !(builtins.elem "bind" (fs.options or [ ]))
      ) filesystems;
      deepest = p: builtins.foldl' (best: fs: if isAtOrBelow fs.mountPoint p.path && (best == null || builtins.stringLength fs.mountPoint > builtins.stringLength best.mountPoint) then fs else best) null separate;
    in
    builtins.concatMap (
      p:
      let
        fs = deepest p;
      in
      optional (fs != null) [
        {
          inherit (p) path;
          inherit (fs) mountPoint;
          neededForBoot = fs.neededForBoot or false;
          message = "${str p.path} is persisted in ${p.storage} but lives on ${fs.mountPoint}, a filesystem of its own: the reset never wipes it, so persisting it keeps nothing, and impermanence would need fileSystems.${str fs.mountPoint}.neededForBoot. Leave it out; a key file that the initrd reads (boot.initrd.secrets, crypttab) can live in ${p.storage} instead, with its reader pointed there.";
        }
      ]
    ) persisted;

  # Persisted paths that something reads before stage 2's bind mounts exist (`reads`:
  # [ { path; reader; fix ? null; } ]), each as the warning to give. imperm's `lint` says
  # the same from config.toml's [[early_read]] (src/lint.rs, early_boot_message).
  earlyBootProblems =
    persisted: reads:
    builtins.concatMap (
      r:
      let
        covering = filter (p: p.path == r.path || (p.directory && isAtOrBelow p.path r.path)) persisted;
        p = builtins.head covering;
        kept = p.storage + r.path;
        fix = if (r.fix or null) != null then r.fix else "point it at ${kept} (the storage is mounted in the initrd), or keep the file with preservation's inInitrd = true";
      in
      optional (covering != [ ]) [ "${str r.path} is read by ${r.reader} before the bind mounts from ${p.storage} exist: ${fix}" ]
    ) reads;

  # services.imperm.users as impermanence takes them: without `home`, an option it has
  # removed (it deduces the home from users.users.NAME.home, and refuses the key). imperm's
  # own config.toml keeps it.
  impermanenceUsers = builtins.mapAttrs (_: u: builtins.removeAttrs u [ "home" ]);

  # Why a host's retention policy (services.imperm.retention, missing keys at the
  # options' defaults) cannot be used, or null. A policy that keeps nothing is refused by
  # imperm itself (status, gc and baseline would exit 2 on the host), so the module
  # asserts this at evaluation instead.
  retentionProblem =
    ret:
    let
      counts = [
        (ret.keepLast or 5)
        (ret.keepDaily or 0)
        (ret.keepWeekly or 4)
        (ret.keepMonthly or "all")
        (ret.keepYearly or 0)
      ];
    in
    if builtins.any (n: n != 0) counts then
      null
    else
      "services.imperm.retention keeps nothing (every keep* is 0): give at least one count, or \"all\"; imperm refuses a policy that would delete every old root.";

  # /etc/imperm/config.toml for a host's services.imperm settings.
  hostToml =
    host:
    let
      fs = host.filesystem or { };
      ret = host.retention or { };
      persisted = hostPersistence host;
    in
    configToml {
      filesystem = {
        type = fs.type;
        device = fs.device or null;
        rootSubvolume = fs.rootSubvolume or "@root";
        snapshotDir = fs.snapshotDir or "@snapshots";
        blankSnapshot = fs.blankSnapshot or null;
      };
      storage = host.persistentStoragePath or "/persist";
      inherit (persisted) directories files users;
      retention = {
        keep_last = ret.keepLast or 5;
        keep_daily = ret.keepDaily or 0;
        keep_weekly = ret.keepWeekly or 4;
        keep_monthly = ret.keepMonthly or "all";
        keep_yearly = ret.keepYearly or 0;
        timezone = ret.timezone or null;
      };
      storages = host.storages or null;
      checkIgnore = host.check.ignore or [ ];
      checkRules = host.check.rules or [ ];
      earlyReads = host.earlyReads or [ ];
    };
}
